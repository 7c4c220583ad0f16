//! `GET /poll/{channels}`: short polling, and long polling with `wait`.
//!
//! The answer is `{"messages":[…],"cursor":"…"}` plus a `gaps` array when
//! messages were missed. The cursor is the id of the last message in the
//! answer; with no message it is the cursor the client sent (or "now" if it
//! sent none), except after a gap, when it moves past what was lost.
//! A long poll with nothing to deliver is held until a message arrives,
//! `wait` passes, or the server shuts down.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use comet_hub::{BatchLimit, Item};
use comet_protocol::json::PollBody;
use http::{HeaderMap, header};

use crate::AppState;
use crate::error::ApiError;
use crate::metrics::Transport;
use crate::transport::{channel_list, open};

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
    let (request, mut subscription) = open(state, channels, query, headers).await?;
    let long = !request.wait.is_zero();
    let transport = if long {
        Transport::LongPoll
    } else {
        Transport::Poll
    };
    let _counted = state.metrics.subscriber(transport);
    let limit = BatchLimit {
        messages: state.config.batch_messages,
        bytes: state.config.max_poll_bytes,
    };

    let mut items = subscription.ready_batch(limit).await?;
    if long && items.is_empty() {
        tokio::select! {
            batch = subscription.next_batch(limit) => items = batch?,
            _ = tokio::time::sleep(request.wait) => {}
            _ = state.shutdown.cancelled() => {}
        }
    }

    let mut body = PollBody::new();
    let mut last_id = None;
    let mut saw_gap = false;
    let mut delivered = 0;
    for item in &items {
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
    state.metrics.delivered(transport, delivered);
    let cursor = match (last_id, saw_gap, request.resume) {
        (Some(id), _, _) => id.to_string(),
        (None, true, _) | (None, false, None) => subscription.cursor().to_string(),
        (None, false, Some((_, given))) => given,
    };
    Ok(body.finish(&cursor))
}
