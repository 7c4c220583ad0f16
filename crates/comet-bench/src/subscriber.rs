//! A scenario's subscriber: an SSE stream or a WebSocket, opened many at a
//! time, each handing out only the data of its messages.

use std::net::SocketAddr;

use crate::http::HttpError;
use crate::sse::SseReader;
use crate::target::{Kind, Target};
use crate::ws::WsReader;

/// How subscribers connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Server-Sent Events.
    Sse,
    /// WebSocket.
    WebSocket,
}

/// One open subscriber.
pub enum Subscriber {
    /// Over SSE.
    Sse(SseReader),
    /// Over a WebSocket.
    Ws(WsReader),
}

impl Subscriber {
    /// Opens `count` subscribers, `concurrency` at a time; the `i`-th on
    /// `addresses[i % addresses.len()]`, to the channel `channel(i)`.
    pub async fn open_many(
        target: &Target,
        transport: Transport,
        addresses: &[SocketAddr],
        count: usize,
        concurrency: usize,
        path: impl Fn(usize) -> String,
    ) -> Result<Vec<Self>, HttpError> {
        let mut subscribers = Vec::with_capacity(count);
        while subscribers.len() < count {
            let first = subscribers.len();
            let batch = concurrency.max(1).min(count - first);
            let opens = (first..first + batch).map(|i| {
                let path = path(i);
                let address = addresses[i % addresses.len()];
                let kind = target.kind;
                async move {
                    match transport {
                        Transport::Sse => SseReader::open(address, &path).await.map(Self::Sse),
                        Transport::WebSocket => {
                            WsReader::open(address, &path, kind).await.map(Self::Ws)
                        }
                    }
                }
            });
            for subscriber in futures::future::join_all(opens).await {
                subscribers.push(subscriber?);
            }
        }
        Ok(subscribers)
    }

    /// Reads, then calls `on_data` with the data of each complete message.
    /// Returns false once the stream ended.
    pub async fn read(&mut self, on_data: impl FnMut(&[u8])) -> Result<bool, HttpError> {
        match self {
            Self::Sse(reader) => reader.read(on_data).await,
            Self::Ws(reader) => reader.read(on_data).await,
        }
    }
}

impl Target {
    /// The path a subscriber of `channel` opens over `transport`.
    pub fn subscribe_path(&self, channel: &str, transport: Transport) -> String {
        match (self.kind, transport) {
            (Kind::Comet, Transport::WebSocket) => format!("/ws/{channel}"),
            _ => self.sse_path(channel),
        }
    }
}
