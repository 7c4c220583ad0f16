//! The streaming loop shared by SSE and HTTP streaming: a response body that
//! never ends on its own.
//!
//! Each turn waits for the first of: server shutdown (the body ends cleanly),
//! a batch from the subscription (written as one chunk; a single message is
//! its shared pre-encoded frame, several are concatenated), or the heartbeat
//! interval passing without a write (a heartbeat is written). A store
//! failure ends the body; the client resumes by id.
//!
//! Backpressure is the socket's: the body is only polled when the
//! connection can take more, and the subscription reads nothing until then.

use std::convert::Infallible;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use comet_hub::{Gap, Item, Subscription};
use comet_protocol::{Message, json, sse};

use crate::AppState;
use crate::metrics::{GaugeGuard, Transport};

/// How a streaming transport frames what it sends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Framing {
    Sse,
    Ndjson,
}

impl Framing {
    fn transport(self) -> Transport {
        match self {
            Framing::Sse => Transport::Sse,
            Framing::Ndjson => Transport::Stream,
        }
    }

    fn message(self, message: &Message) -> &Bytes {
        match self {
            Framing::Sse => message.sse_frame(),
            Framing::Ndjson => message.json_line(),
        }
    }

    fn gap(self, gap: &Gap) -> Bytes {
        match self {
            Framing::Sse => sse::encode_gap(gap),
            Framing::Ndjson => json::encode_gap_line(gap),
        }
    }

    fn heartbeat(self) -> Bytes {
        match self {
            Framing::Sse => Bytes::from_static(sse::HEARTBEAT),
            Framing::Ndjson => Bytes::from_static(json::HEARTBEAT_LINE),
        }
    }
}

struct Live {
    state: AppState,
    subscription: Subscription,
    framing: Framing,
    opening: Option<Bytes>,
    _counted: GaugeGuard,
}

/// A body streaming `subscription` with `framing`, starting with `opening`.
pub(crate) fn body(
    state: AppState,
    subscription: Subscription,
    framing: Framing,
    opening: Option<Bytes>,
) -> Body {
    let live = Live {
        _counted: state.metrics.subscriber(framing.transport()),
        state,
        subscription,
        framing,
        opening,
    };
    Body::from_stream(futures::stream::unfold(live, |mut live| async move {
        let chunk = live.next_chunk().await?;
        Some((Ok::<Bytes, Infallible>(chunk), live))
    }))
}

impl Live {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(opening) = self.opening.take() {
            return Some(opening);
        }
        let limit = self.state.config.batch_messages;
        let heartbeat = self.state.config.heartbeat;
        tokio::select! {
            biased;
            _ = self.state.shutdown.cancelled() => None,
            batch = self.subscription.next_batch(limit) => match batch {
                Ok(items) => Some(self.encode(&items)),
                Err(error) => {
                    tracing::warn!(%error, "ending a stream: the store failed");
                    None
                }
            },
            _ = tokio::time::sleep(heartbeat) => Some(self.framing.heartbeat()),
        }
    }

    fn encode(&self, items: &[Item]) -> Bytes {
        let messages = items
            .iter()
            .filter(|item| matches!(item, Item::Message(_)))
            .count();
        self.state
            .metrics
            .delivered(self.framing.transport(), messages);
        if let [Item::Message(message)] = items {
            return self.framing.message(message).clone();
        }
        let mut chunk = BytesMut::new();
        for item in items {
            match item {
                Item::Message(message) => chunk.extend_from_slice(self.framing.message(message)),
                Item::Gap(gap) => chunk.extend_from_slice(&self.framing.gap(gap)),
            }
        }
        chunk.freeze()
    }
}
