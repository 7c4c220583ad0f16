//! What SSE, HTTP streaming and WebSocket share: opening the subscription,
//! and the loop that yields what to send, which never ends on its own. They
//! differ only in [`Framing`]. Two writers sit on top: `socket` (the usual
//! path, straight to the connection) and [`respond`] (a response body
//! through the router, for requests `socket` leaves to it).
//!
//! Each turn yields the next batch as shared, pre-encoded frames (never a
//! copy), waiting for the first of: server shutdown (the stream ends
//! cleanly), a batch from the subscription, or the heartbeat interval
//! passing (a heartbeat is sent). A store failure ends the stream; the
//! client resumes by id.
//!
//! Backpressure is the socket's: the writer asks for the next batch only
//! once the last one is written, and the subscription reads nothing
//! meanwhile. A stuck client therefore holds at most one batch of shared
//! messages (and, through the router, hyper's bounded write buffer).

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use comet_hub::{BatchLimit, Gap, GroupWriter, Grouped, Item, Start, Subscription};
use comet_protocol::{Cursor, Message, json, sse, ws};
use http::{HeaderMap, header};
use std::sync::Arc;

use crate::AppState;
use crate::error::ApiError;
use crate::metrics::{GaugeGuard, Transport};
use crate::transport::grant::Grant;
use crate::transport::socket::chunk_size_line;
use crate::transport::{Opened, channel_list, open};
use std::time::SystemTime;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// How a streaming transport frames what it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    Sse,
    Ndjson,
    /// Text frames, each one JSON object of the NDJSON stream.
    WebSocket,
}

impl Framing {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Framing::Sse => sse::CONTENT_TYPE,
            Framing::Ndjson | Framing::WebSocket => json::NDJSON_CONTENT_TYPE,
        }
    }

    /// What the stream starts with: SSE announces the reconnection delay
    /// and, unless a backlog is on its way, the starting cursor; NDJSON
    /// starts with a heartbeat, so a client sees at once that bytes flow
    /// (and can tell a buffering proxy by their absence).
    fn opening(self, state: &AppState, cursor: Option<&Cursor>) -> Option<Bytes> {
        match self {
            Framing::Sse => Some(sse::encode_opening(
                state.config.sse_retry.as_millis() as u64,
                cursor,
            )),
            Framing::Ndjson => Some(self.heartbeat()),
            Framing::WebSocket => Some(Bytes::from_static(ws::HEARTBEAT_FRAME)),
        }
    }

    pub(crate) fn transport(self) -> Transport {
        match self {
            Framing::Sse => Transport::Sse,
            Framing::Ndjson => Transport::Stream,
            Framing::WebSocket => Transport::WebSocket,
        }
    }

    pub(crate) fn message(self, message: &Message) -> Bytes {
        match self {
            Framing::Sse => message.sse_frame().clone(),
            Framing::Ndjson => message.json_line(),
            Framing::WebSocket => message.ws_frame(),
        }
    }

    /// `messages` as one piece, as a stream writes them at once: SSE and
    /// NDJSON as one HTTP chunk, WebSocket as its text frames.
    pub(crate) fn messages(self, messages: &[Arc<Message>]) -> Bytes {
        let frames: Vec<Bytes> = messages
            .iter()
            .map(|message| self.message(message))
            .collect();
        let size: usize = frames.iter().map(Bytes::len).sum();
        let chunked = self != Framing::WebSocket;
        let mut size_line = [0u8; 18];
        let (size_line, end): (&[u8], &[u8]) = if chunked {
            (chunk_size_line(size, &mut size_line), b"\r\n")
        } else {
            (b"", b"")
        };
        let mut joined = BytesMut::with_capacity(size_line.len() + size + end.len());
        joined.extend_from_slice(size_line);
        for frame in &frames {
            joined.extend_from_slice(frame);
        }
        joined.extend_from_slice(end);
        joined.freeze()
    }

    fn gap(self, gap: &Gap) -> Bytes {
        match self {
            Framing::Sse => sse::encode_gap(gap),
            Framing::Ndjson => json::encode_gap_line(gap),
            Framing::WebSocket => {
                let line = json::encode_gap_line(gap);
                ws::text_frame(&line[..line.len() - 1])
            }
        }
    }

    fn heartbeat(self) -> Bytes {
        self.heartbeat_for(false)
    }

    /// The last frame of a stream whose authorization was revoked: a
    /// WebSocket's close frame; SSE and NDJSON have none (the response
    /// ends).
    fn revoked(self) -> Option<Bytes> {
        match self {
            Framing::WebSocket => Some(Bytes::from_static(ws::REVOKED_FRAME)),
            Framing::Sse | Framing::Ndjson => None,
        }
    }

    /// The last frame of a stream whose credential expired.
    fn expired(self) -> Bytes {
        match self {
            Framing::Sse => Bytes::from_static(sse::EXPIRED_EVENT),
            Framing::Ndjson => Bytes::from_static(json::EXPIRED_LINE),
            Framing::WebSocket => Bytes::from_static(ws::EXPIRED_FRAME),
        }
    }

    /// The heartbeat, as an event when the client asked for one (SSE only:
    /// NDJSON heartbeats are lines page code sees anyway).
    fn heartbeat_for(self, as_event: bool) -> Bytes {
        match self {
            Framing::Sse if as_event => Bytes::from_static(sse::HEARTBEAT_EVENT),
            Framing::Sse => Bytes::from_static(sse::HEARTBEAT),
            Framing::Ndjson => Bytes::from_static(json::HEARTBEAT_LINE),
            Framing::WebSocket => Bytes::from_static(ws::HEARTBEAT_AND_PING),
        }
    }
}

/// One open stream: its subscription, and what it sends first.
pub(crate) struct Live {
    state: AppState,
    subscription: Subscription,
    framing: Framing,
    opening: Option<Bytes>,
    /// Heartbeats as events (SSE `?heartbeat=event`).
    heartbeat_events: bool,
    /// When the credential that allowed the stream expires.
    deadline: Option<Instant>,
    /// What allowed the stream, judged again when the rules change (boxed:
    /// a stream's state stays small while it waits).
    grant: Box<Grant>,
    /// The credential expired or was revoked, and the stream said so: it
    /// is over.
    ended: bool,
    /// The last frames handed out were a heartbeat.
    heartbeat_sent: bool,
    _counted: GaugeGuard,
    _place: OwnedSemaphorePermit,
}

/// The moment `at` on the runtime's clock.
pub(crate) fn deadline(at: SystemTime) -> Instant {
    Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default()
}

/// Resolves at `deadline`; never without one.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Validates a subscription request and answers with a never-ending
/// stream of it, framed by `framing`. Headers keep proxies from buffering
/// or caching.
pub(crate) async fn respond(
    state: AppState,
    channels: Result<Path<String>, PathRejection>,
    query: Option<&str>,
    headers: &HeaderMap,
    framing: Framing,
) -> Result<Response, ApiError> {
    let live = Live::open(state, &channel_list(channels)?, query, headers, framing).await?;
    // Hyper gathers the frames handed to it into vectored writes.
    let body = Body::from_stream(futures::stream::unfold(
        (live, VecDeque::new()),
        |(mut live, mut in_hand)| async move {
            if in_hand.is_empty() {
                in_hand = live.next_frames().await?.into();
            }
            let frame = in_hand.pop_front()?;
            Some((Ok::<Bytes, Infallible>(frame), (live, in_hand)))
        },
    ));
    Ok((
        [
            (header::CONTENT_TYPE, framing.content_type()),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response())
}

impl Live {
    /// Validates a subscription request and opens its subscription.
    pub(crate) async fn open(
        state: AppState,
        channels: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        framing: Framing,
    ) -> Result<Self, ApiError> {
        let Opened {
            request,
            subscription,
            place,
            expires_at,
            grant,
        } = open(&state, channels, query, headers).await?;
        // With a backlog pending, the position is past messages not yet
        // sent: announcing it would let a reconnect skip them.
        let starting_cursor = match request.start {
            Start::Backlog(count) if count > 0 => None,
            _ => Some(subscription.cursor()),
        };
        Ok(Live {
            _counted: state.metrics.subscriber(framing.transport()),
            _place: place,
            opening: framing.opening(&state, starting_cursor.as_ref()),
            heartbeat_events: request.heartbeat_events,
            deadline: expires_at.map(deadline),
            grant: Box::new(grant),
            ended: false,
            heartbeat_sent: false,
            state,
            subscription,
            framing,
        })
    }

    /// How the stream is framed.
    pub(crate) fn framing(&self) -> Framing {
        self.framing
    }

    /// The credential expired or was revoked, and the stream said so (if
    /// its framing has a way to): it is over.
    pub(crate) fn has_ended(&self) -> bool {
        self.ended
    }

    /// The frames last handed out were a heartbeat (the stream was idle).
    pub(crate) fn sent_heartbeat(&self) -> bool {
        self.heartbeat_sent
    }

    /// Joins the group of the stream's channel (see `comet_hub`'s group):
    /// `None` unless the stream has nothing to send now.
    pub(crate) fn join_group(&self, writer: Arc<dyn GroupWriter>) -> Option<Grouped> {
        if !self.may_join_group() {
            return None;
        }
        self.subscription.join_group(writer, self.batch_limit())
    }

    /// Whether [`Self::join_group`] would join now (see
    /// `Subscription::may_join_group`).
    pub(crate) fn may_join_group(&self) -> bool {
        self.opening.is_none() && !self.ended && self.subscription.may_join_group()
    }

    /// Leaves the group: what it wrote counts as sent.
    pub(crate) fn leave_group(&mut self, grouped: Grouped) {
        self.subscription.leave_group(grouped);
    }

    /// When the credential that allowed the stream expires.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// A heartbeat, to send now.
    pub(crate) fn heartbeat_now(&mut self) -> Vec<Bytes> {
        self.heartbeat_sent = true;
        vec![self.framing.heartbeat_for(self.heartbeat_events)]
    }

    fn batch_limit(&self) -> BatchLimit {
        BatchLimit {
            messages: self.state.config.batch_messages,
            bytes: self.state.config.batch_bytes,
        }
    }

    /// The frames to send next, at least one; `None` when the stream ends
    /// (server shutdown, a store failure, or a revoked authorization with
    /// no frame to say so).
    pub(crate) async fn next_frames(&mut self) -> Option<Vec<Bytes>> {
        self.heartbeat_sent = false;
        if self.ended {
            return None;
        }
        if self.grant.revoked_now(&self.state.rules) {
            return self.revoke();
        }
        if let Some(opening) = self.opening.take() {
            return Some(vec![opening]);
        }
        let limit = self.batch_limit();
        let heartbeat = self.state.config.heartbeat;
        let deadline = self.deadline;
        tokio::select! {
            biased;
            _ = self.state.shutdown.cancelled() => None,
            () = until(deadline) => {
                self.ended = true;
                Some(vec![self.framing.expired()])
            }
            batch = self.subscription.next_batch(limit) => match batch {
                // Nothing more for a stream the rules changed against.
                Ok(_) if self.grant.revoked_now(&self.state.rules) => self.revoke(),
                Ok(items) => {
                    let frames: Vec<Bytes> = items.iter().map(|item| self.frame(item)).collect();
                    let messages = items
                        .iter()
                        .filter(|item| matches!(item, Item::Message(_)))
                        .count();
                    self.state.metrics.delivered(self.framing.transport(), messages);
                    Some(frames)
                }
                Err(error) => {
                    tracing::warn!(%error, "ending a stream: the store failed");
                    None
                }
            },
            _ = tokio::time::sleep(heartbeat) => {
                if self.grant.revoked_now(&self.state.rules) {
                    return self.revoke();
                }
                self.heartbeat_sent = true;
                Some(vec![self.framing.heartbeat_for(self.heartbeat_events)])
            }
        }
    }

    /// Ends the stream whose authorization the rules revoked: its last
    /// frame, if its framing has one.
    fn revoke(&mut self) -> Option<Vec<Bytes>> {
        self.ended = true;
        self.state.metrics.auth_refused("revoked");
        tracing::debug!("ending a stream: the new rules no longer allow it");
        self.framing.revoked().map(|frame| vec![frame])
    }

    /// The rules changed since the stream was last judged
    /// ([`Self::next_frames`] judges it).
    pub(crate) fn rules_changed(&self) -> bool {
        self.grant.changed()
    }

    fn frame(&self, item: &Item) -> Bytes {
        match item {
            Item::Message(message) => self.framing.message(message),
            Item::Gap(gap) => self.framing.gap(gap),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The streaming loop's timing, on paused time: heartbeats come after
    //! exactly the configured idle time, never while messages flow, without
    //! a test waiting in real time.

    use std::sync::Arc;
    use std::time::Duration;

    use comet_hub::{Hub, HubConfig};
    use comet_protocol::{ChannelName, Data, EventType, sse};
    use comet_store::{MemoryStore, StoreOptions};
    use http::HeaderMap;
    use tokio::time::Instant;

    use super::*;
    use crate::{Server, ServerConfig};

    async fn open(query: Option<&str>, framing: Framing) -> (Hub, Live) {
        let hub = Hub::new(
            Arc::new(MemoryStore::new(StoreOptions::default())),
            HubConfig::default(),
        );
        let server = Server::new(hub.clone(), ServerConfig::default()).unwrap();
        let live = Live::open(
            server.state.clone(),
            "news",
            query,
            &HeaderMap::new(),
            framing,
        )
        .await
        .unwrap();
        (hub, live)
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_come_after_the_idle_time_and_not_while_messages_flow() {
        let heartbeat = ServerConfig::default().heartbeat;
        let (hub, mut live) = open(None, Framing::Sse).await;
        let opening = live.next_frames().await.unwrap();
        assert!(opening[0].starts_with(b"retry: 3000\n"));

        let started = Instant::now();
        let frames = live.next_frames().await.unwrap();
        assert_eq!(frames, [Bytes::from_static(sse::HEARTBEAT)]);
        assert_eq!(started.elapsed(), heartbeat);

        // A message just before a heartbeat would be due goes out at once,
        // and the next heartbeat is a whole interval after it.
        tokio::time::advance(heartbeat - Duration::from_secs(1)).await;
        hub.publish(
            &ChannelName::new("news").unwrap(),
            EventType::message(),
            Data::from("hello".to_string()),
        )
        .await
        .unwrap();
        let sent = Instant::now();
        let frames = live.next_frames().await.unwrap();
        assert!(frames[0].ends_with(b"data: hello\n\n"), "{frames:?}");
        assert_eq!(sent.elapsed(), Duration::ZERO);
        let frames = live.next_frames().await.unwrap();
        assert_eq!(frames, [Bytes::from_static(sse::HEARTBEAT)]);
        assert_eq!(sent.elapsed(), heartbeat);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_are_events_when_asked_and_lines_on_ndjson() {
        let (_hub, mut live) = open(Some("heartbeat=event"), Framing::Sse).await;
        live.next_frames().await.unwrap();
        let frames = live.next_frames().await.unwrap();
        assert_eq!(frames, [Bytes::from_static(sse::HEARTBEAT_EVENT)]);

        let (_hub, mut live) = open(None, Framing::Ndjson).await;
        let opening = live.next_frames().await.unwrap();
        assert_eq!(opening, [Bytes::from_static(json::HEARTBEAT_LINE)]);
        let frames = live.next_frames().await.unwrap();
        assert_eq!(frames, [Bytes::from_static(json::HEARTBEAT_LINE)]);
    }
}
