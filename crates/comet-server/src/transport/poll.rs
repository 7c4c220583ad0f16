//! `GET /poll/{channels}`: short polling, and long polling with `wait`.
//!
//! The answer is `{"messages":[…],"cursor":"…"}` plus a `gaps` array when
//! messages were missed. The cursor is the id of the last message in the
//! answer; with no message it is the cursor the client sent (or "now" if it
//! sent none), except after a gap, when it moves past what was lost.
//! A long poll with nothing to deliver is held until a message arrives,
//! `wait` passes, or the server shuts down. `Poll` is the poll itself;
//! the router's handler waits here, the direct path parks it
//! (`crate::connection::parked`), and both answer alike.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use comet_hub::{BatchLimit, Item, Subscription};
use comet_protocol::Message;
use comet_protocol::json::PollBody;
use http::{HeaderMap, header};

use crate::AppState;
use crate::auth;
use crate::error::ApiError;
use crate::metrics::{GaugeGuard, Transport};
use crate::params::Subscribe;
use crate::transport::grant::Grant;
use crate::transport::{Opened, channel_list, open};
use tokio::sync::OwnedSemaphorePermit;

/// Answers a short or long poll.
pub(crate) async fn poll(
    State(state): State<AppState>,
    channels: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let body = answer(&state, &channel_list(channels)?, query.as_deref(), &headers).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

/// The JSON answer to a poll of `channels` (a path segment, decoded).
pub(crate) async fn answer(
    state: &AppState,
    channels: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Bytes, ApiError> {
    let mut poll = Poll::start(state, channels, query, headers).await?;
    let mut items = poll.ready().await?;
    if poll.is_long() && items.is_empty() {
        tokio::select! {
            batch = poll.subscription.next_batch(poll.limit) => items = batch?,
            _ = tokio::time::sleep(poll.request.wait) => {}
            _ = state.shutdown.cancelled() => {}
        }
    }
    poll.judged_again(state)?;
    Ok(poll.render(state, &items))
}

/// A poll being answered: its request and subscription.
pub(crate) struct Poll {
    pub(crate) request: Subscribe,
    pub(crate) subscription: Subscription,
    limit: BatchLimit,
    transport: Transport,
    /// What allowed it, judged again before it delivers after a change.
    grant: Grant,
    _counted: GaugeGuard,
    _place: OwnedSemaphorePermit,
}

impl Poll {
    /// Validates the request and opens its subscription.
    pub(crate) async fn start(
        state: &AppState,
        channels: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Self, ApiError> {
        let Opened {
            mut request,
            subscription,
            place,
            expires_at,
            grant,
        } = open(state, channels, query, headers).await?;
        if let Some(expires_at) = expires_at {
            // A long poll never waits past its credential.
            let left = expires_at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            request.wait = request.wait.min(left);
        }
        let transport = if request.wait.is_zero() {
            Transport::Poll
        } else {
            Transport::LongPoll
        };
        Ok(Self {
            request,
            subscription,
            limit: BatchLimit {
                messages: state.config.batch_messages,
                bytes: state.config.max_poll_bytes,
            },
            transport,
            grant,
            _counted: state.metrics.subscriber(transport),
            _place: place,
        })
    }

    /// Judges the poll again if the rules changed since it opened: their
    /// refusal, to answer with instead of messages, if they no longer
    /// allow it.
    pub(crate) fn judged_again(&mut self, state: &AppState) -> Result<(), ApiError> {
        match self.grant.refusal_now(&state.rules) {
            None => Ok(()),
            Some(refusal) => Err(auth::refused(state, refusal, self.grant.token_given())),
        }
    }

    /// A look at the changes of the rules (see [`Grant::changes`]).
    pub(crate) fn rule_changes(&self) -> tokio::sync::watch::Receiver<()> {
        self.grant.changes()
    }

    /// A long poll: one that waits when there is nothing to deliver.
    pub(crate) fn is_long(&self) -> bool {
        self.transport == Transport::LongPoll
    }

    /// What can be delivered now, without waiting.
    pub(crate) async fn ready(&mut self) -> Result<Vec<Item>, ApiError> {
        Ok(self.subscription.ready_batch(self.limit).await?)
    }

    /// The answer delivering `items` (possibly none).
    pub(crate) fn render(&self, state: &AppState, items: &[Item]) -> Bytes {
        let mut body = PollBody::new();
        let mut last_id = None;
        let mut saw_gap = false;
        let mut delivered = 0;
        for item in items {
            match item {
                Item::Gap(gap) => {
                    body.push_gap(gap);
                    saw_gap = true;
                }
                Item::Message(message) => {
                    body.push_message(message);
                    last_id = Some(message.id());
                    delivered += 1;
                }
            }
        }
        state.metrics.delivered(self.transport, delivered);
        match (last_id, saw_gap, &self.request.resume) {
            (Some(id), _, _) => body.finish(&id),
            (None, true, _) | (None, false, None) => body.finish(&self.subscription.cursor()),
            (None, false, Some((_, given))) => body.finish(given),
        }
    }
}

/// The answer to a long poll caught by `message` (see
/// `comet_hub::Subscription::park`): that message alone.
pub(crate) fn caught_answer(message: &Message) -> Bytes {
    let mut body = PollBody::new();
    body.push_message(message);
    body.finish(&message.id())
}
