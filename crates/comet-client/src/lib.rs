//! A Rust client for Comet, and a standard `EventSource` for any SSE server.
//!
//! ```no_run
//! # async fn example() -> Result<(), comet_client::Error> {
//! use comet_client::{Client, Item, SubscribeOptions, Transport};
//! use futures::StreamExt;
//!
//! let client = Client::new("http://127.0.0.1:8080")?;
//! client.publish("news", "hello").await?;
//!
//! let mut subscription = client
//!     .subscribe(&["news", "sport"], SubscribeOptions::default())
//!     .await?;
//! while let Some(item) = subscription.next().await {
//!     match item? {
//!         Item::Message(message) => println!("{}: {}", message.channel, message.data),
//!         Item::Gap(gap) => eprintln!("missed messages of {} ({})", gap.channel, gap.reason),
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! - [`Client::publish`] sends a message and returns its id;
//!   [`Client::publish_batch`] sends many at once. A publish whose outcome
//!   could not be learned (a timeout, a dropped connection, a 503) is sent
//!   again with the same idempotency key, so it is stored once.
//! - [`Client::subscribe`] follows channels over SSE, HTTP streaming, long
//!   or short polling as one `Stream` of [`Item`]s: messages, and gap
//!   signals as their own variant. It resumes by itself after every
//!   disconnection, from the last id it delivered, and never starts over
//!   from "now" once started.
//! - [`EventSource`] reads any SSE endpoint, not only Comet's, with the
//!   reconnection rules of the HTML Standard.
//!
//! The crate knows Comet only through its HTTP contract; it shares the wire
//! vocabulary (names, the event-stream parser) with the server through
//! `comet-protocol`, nothing else.

mod error;
mod event_source;
mod publish;
mod reconnect;
mod subscription;

use bytes::Bytes;
pub use comet_protocol::sse::{Event as SseEvent, ParserLimits};
pub use error::Error;
pub use event_source::{EventSource, EventSourceOptions};
pub use publish::{
    DEFAULT_PUBLISH_RETRIES, DEFAULT_PUBLISH_RETRY_DELAY, Publication, Published,
    new_idempotency_key,
};
pub use reconnect::Reconnect;
use serde::Deserialize;
pub use subscription::{Gap, Item, Message, SubscribeOptions, Subscription, Transport};

/// A Comet server.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    publish_timeout: std::time::Duration,
    publish_retries: u32,
    publish_retry_delay: std::time::Duration,
    token: Option<String>,
}

/// How long a publish may take, answer included, unless set otherwise
/// ([`Client::with_publish_timeout`]).
pub const DEFAULT_PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Client {
    /// A client for the server at `base` (for example
    /// `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Result<Self, Error> {
        // Idle connections are let go before a Comet server's default idle
        // timeout (10 s) closes them: a request written on a connection the
        // server is closing fails once written, and a publish is not
        // retried blindly.
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .pool_idle_timeout(std::time::Duration::from_secs(5))
            .build()?;
        Self::with_http(base, http)
    }

    /// A client that makes its requests with `http`.
    pub fn with_http(base: &str, http: reqwest::Client) -> Result<Self, Error> {
        let mut base = reqwest::Url::parse(base).map_err(|error| Error::Url {
            url: base.to_string(),
            reason: error.to_string(),
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Url {
                url: base.to_string(),
                reason: "only http and https are supported".into(),
            });
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self {
            http,
            base,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            publish_retries: DEFAULT_PUBLISH_RETRIES,
            publish_retry_delay: DEFAULT_PUBLISH_RETRY_DELAY,
            token: None,
        })
    }

    /// The same client, sending `token` (an API key or a JWT) as
    /// `Authorization: Bearer` with every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// A request builder with the client's token.
    pub(crate) fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// The same client, giving each attempt of a publish at most `timeout`
    /// (from sending the request to reading the answer); a publish whose
    /// attempts all time out fails with [`Error::Timeout`].
    pub fn with_publish_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// The same client, sending a publish whose outcome could not be
    /// learned (a timeout, a dropped connection, 408, 429, 500, 502, 503,
    /// 504) up to `retries` more times, with the same idempotency key (made
    /// for every publish that has none). `0`: no retries and no keys made;
    /// a failed publish may or may not have been stored.
    pub fn with_publish_retries(mut self, retries: u32) -> Self {
        self.publish_retries = retries;
        self
    }

    /// The same client, waiting `delay` before the first retry of a
    /// publish (doubled before each next one).
    pub fn with_publish_retry_delay(mut self, delay: std::time::Duration) -> Self {
        self.publish_retry_delay = delay;
        self
    }

    /// The underlying HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `base` joined with `path` (no leading slash).
    fn url(&self, path: &str) -> Result<reqwest::Url, Error> {
        self.base.join(path).map_err(|error| Error::Url {
            url: format!("{}{path}", self.base),
            reason: error.to_string(),
        })
    }

    /// Publishes `data` to `channel` with the default event type.
    pub async fn publish(&self, channel: &str, data: impl Into<Bytes>) -> Result<Published, Error> {
        self.publish_event(channel, None, data).await
    }

    /// Publishes `data` to `channel` with an event type.
    pub async fn publish_event(
        &self,
        channel: &str,
        event: Option<&str>,
        data: impl Into<Bytes>,
    ) -> Result<Published, Error> {
        self.publish_with_key(channel, event, data, None).await
    }

    /// Follows `channels`. Without `since` or `backlog`, the subscription
    /// starts "now", which is fixed before this returns (with one short
    /// poll): every message published after it returns is delivered, even
    /// if a connection drops before the first one.
    pub async fn subscribe(
        &self,
        channels: &[&str],
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        subscription::start(self, channels, options).await
    }
}

/// Turns an unexpected answer into [`Error::Status`], with Comet's error
/// code and message when the body is a Comet JSON error.
pub(crate) async fn status_error(response: reqwest::Response) -> Error {
    let status = response.status().as_u16();
    // The start of the answer is enough to explain it; it may never end.
    let mut response = response;
    let mut body = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while body.len() < 4096 {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
    })
    .await;
    status_error_of(status, &body)
}

/// [`Error::Status`] for an answer of `status` with `body`.
pub(crate) fn status_error_of(status: u16, body: &[u8]) -> Error {
    #[derive(Deserialize)]
    struct ApiError {
        error: String,
        message: String,
    }
    match serde_json::from_slice::<ApiError>(body) {
        Ok(api) => Error::Status {
            status,
            code: Some(api.error),
            message: api.message,
        },
        Err(_) => Error::Status {
            status,
            code: None,
            message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    }
}
