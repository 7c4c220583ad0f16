//! A standard `EventSource` for any server: connect, parse with the
//! WHATWG-exact parser, and reconnect as the HTML Standard describes.
//!
//! - The request carries `Accept: text/event-stream`, `Cache-Control:
//!   no-cache`, and `Last-Event-ID` when the last event id is not empty.
//! - A 200 answer of type `text/event-stream` is read; a 204 ends the
//!   stream quietly (the standard's way for a server to say "stop"); a
//!   transient status (408, 429, 500, 502, 503, 504: a proxy's error during
//!   a deploy, a full server) is retried with backoff, where a browser
//!   would give up; any other status, or another content type, ends it with
//!   an error.
//! - When a working connection ends, the source waits the reconnection time
//!   (set by `retry:`) and reconnects with the last event id. When the
//!   server cannot be reached, waits double per failure up to a ceiling,
//!   with jitter (see [`Reconnect`]).
//! - Nothing is buffered beyond the parser's bounded line and event, and
//!   the events of the chunk being read: the stream is pulled, so a slow
//!   consumer simply reads the socket more slowly.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use comet_protocol::sse::{Event, EventStreamParser, ParserLimits};
use futures::stream::{BoxStream, Stream, StreamExt};
use reqwest::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};

use crate::{Error, Reconnect};

/// Options of an [`EventSource`].
#[derive(Clone, Debug, Default)]
pub struct EventSourceOptions {
    /// The id to resume after (sent as `Last-Event-ID` on the first request).
    pub last_event_id: Option<String>,
    /// A bearer token, sent as `Authorization: Bearer` with every request.
    pub token: Option<String>,
    /// Bounds on lines and events.
    pub limits: ParserLimits,
    /// Reconnection and time-outs.
    pub reconnect: Reconnect,
}

/// A stream of the events of an SSE endpoint, reconnecting by itself.
/// Ends after a 204; yields one `Err` and ends on a fatal error.
pub struct EventSource {
    inner: BoxStream<'static, Result<Event, Error>>,
}

impl EventSource {
    /// Starts reading `url` with `client`. Nothing is sent until the stream
    /// is first polled.
    pub fn new(client: reqwest::Client, url: reqwest::Url, options: EventSourceOptions) -> Self {
        let state = Connection {
            client,
            url,
            reconnection_time: options.reconnect.initial,
            last_event_id: options.last_event_id.clone().unwrap_or_default(),
            options,
            body: None,
            parser: None,
            pending: VecDeque::new(),
            failures: 0,
            wait: None,
            done: false,
        };
        let inner = futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })
        .boxed();
        Self { inner }
    }
}

impl Stream for EventSource {
    type Item = Result<Event, Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// What reading an open connection gave.
enum Read {
    Chunk(Bytes),
    Ended,
}

struct Connection {
    client: reqwest::Client,
    url: reqwest::Url,
    options: EventSourceOptions,
    reconnection_time: Duration,
    /// The id a reconnection sends (the standard's "last event ID string").
    last_event_id: String,
    body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    parser: Option<EventStreamParser>,
    /// Events parsed and not yet taken; a fatal error comes after them.
    pending: VecDeque<Result<Event, Error>>,
    /// Consecutive attempts that failed to open a stream.
    failures: u32,
    /// Wait before the next attempt.
    wait: Option<Duration>,
    /// No more connections: after a 204 or a fatal error.
    done: bool,
}

impl Connection {
    async fn next(&mut self) -> Option<Result<Event, Error>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            if self.body.is_some() {
                match self.read().await {
                    Read::Chunk(chunk) => self.parse(&chunk),
                    Read::Ended => self.connection_ended(),
                }
                continue;
            }
            if let Some(wait) = self.wait.take() {
                tokio::time::sleep(wait).await;
            }
            if let Err(error) = self.open().await {
                self.done = true;
                return Some(Err(error));
            }
        }
    }

    fn parse(&mut self, chunk: &[u8]) {
        let Some(parser) = self.parser.as_mut() else {
            return;
        };
        let mut events = Vec::new();
        let parsed = parser.feed(chunk, &mut events);
        self.pending.extend(events.into_iter().map(Ok));
        if let Err(error) = parsed {
            // What came before the error is delivered, then the error.
            self.pending.push_back(Err(error.into()));
            self.body = None;
            self.parser = None;
            self.done = true;
        }
    }

    async fn read(&mut self) -> Read {
        let Some(body) = self.body.as_mut() else {
            return Read::Ended;
        };
        let next = match self.options.reconnect.idle_timeout {
            Some(limit) => match tokio::time::timeout(limit, body.next()).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::debug!(url = %self.url, "no bytes for {limit:?}: reconnecting");
                    return Read::Ended;
                }
            },
            None => body.next().await,
        };
        match next {
            Some(Ok(chunk)) => Read::Chunk(chunk),
            Some(Err(error)) => {
                tracing::debug!(url = %self.url, %error, "the connection failed: reconnecting");
                Read::Ended
            }
            None => Read::Ended,
        }
    }

    /// A working connection ended: an unfinished event is dropped, the
    /// last event id and reconnection time carry over.
    fn connection_ended(&mut self) {
        self.body = None;
        if let Some(parser) = self.parser.take() {
            let end = parser.finish();
            self.last_event_id = end.last_event_id;
            if let Some(retry) = end.retry {
                self.reconnection_time = Duration::from_millis(retry);
            }
        }
        self.wait = Some(
            self.options
                .reconnect
                .delay(self.reconnection_time, self.failures),
        );
    }

    /// One attempt to open the stream. `Err` is fatal; a server that cannot
    /// be reached schedules another attempt instead.
    async fn open(&mut self) -> Result<(), Error> {
        let mut request = self
            .client
            .get(self.url.clone())
            .header(ACCEPT, "text/event-stream")
            .header(CACHE_CONTROL, "no-cache");
        if let Some(token) = &self.options.token {
            request = request.bearer_auth(token);
        }
        if !self.last_event_id.is_empty()
            && let Ok(value) = HeaderValue::from_bytes(self.last_event_id.as_bytes())
        {
            request = request.header("Last-Event-ID", value);
        }
        let limit = self.options.reconnect.open_timeout;
        let response = match tokio::time::timeout(limit, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                tracing::debug!(url = %self.url, %error, "cannot connect: retrying");
                self.attempt_failed();
                return Ok(());
            }
            Err(_) => {
                tracing::debug!(url = %self.url, "no answer within {limit:?}: retrying");
                self.attempt_failed();
                return Ok(());
            }
        };
        let status = response.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            self.done = true;
            return Ok(());
        }
        if crate::error::is_transient(status) {
            let error = crate::status_error(response).await;
            tracing::info!(url = %self.url, %error, "retrying");
            self.attempt_failed();
            return Ok(());
        }
        if status != reqwest::StatusCode::OK {
            return Err(crate::status_error(response).await);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !is_media_type(&content_type, "text/event-stream") {
            return Err(Error::ContentType {
                expected: "text/event-stream",
                found: content_type,
            });
        }
        self.failures = 0;
        self.parser = Some(EventStreamParser::resuming(
            self.options.limits,
            &self.last_event_id,
        ));
        self.body = Some(response.bytes_stream().boxed());
        Ok(())
    }

    fn attempt_failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
        self.wait = Some(
            self.options
                .reconnect
                .delay(self.reconnection_time, self.failures),
        );
    }
}

/// True when `content_type` is `expected`, whatever its parameters.
pub(crate) fn is_media_type(content_type: &str, expected: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(expected))
}
