//! Following Comet channels over any transport as one stream of [`Item`]s.
//!
//! Every transport keeps a cursor (the id of the last message delivered) and
//! resumes from it after a disconnection, so a subscription delivers each
//! message once, in order, whatever happens to its connections. A
//! subscription that starts at "now" first learns what "now" is with a
//! short poll, and starts from that cursor: even a reconnection before the
//! first message loses nothing.
//!
//! How each transport reads (see the server's README for the formats):
//! - `Sse`: an [`EventSource`] on `/sse/{channels}`; `comet-gap` events are
//!   gaps, every other event a message whose channel is named in its id;
//! - `Stream`: `/stream/{channels}`, one JSON object per line (bounded);
//! - `LongPoll` and `Poll`: `/poll/{channels}` in a loop, with `wait` or
//!   with a pause between polls.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::BytesMut;
use comet_protocol::ChannelList;
use comet_protocol::sse::{EXPIRED_EVENT_TYPE, GAP_EVENT, HEARTBEAT_EVENT_TYPE, ParserLimits};
use futures::stream::{BoxStream, Stream, StreamExt};
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;

use comet_protocol::ws::close::TOKEN_EXPIRED;

use crate::event_source::is_media_type;
use crate::{Client, Error, EventSource, EventSourceOptions, Reconnect};

/// How to reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Server-Sent Events.
    Sse,
    /// HTTP streaming (NDJSON).
    Stream,
    /// Long polling: each poll is held up to `wait` until a message comes.
    LongPoll {
        /// How long the server may hold a poll.
        wait: Duration,
    },
    /// Short polling, pausing `interval` after a poll that brought nothing.
    Poll {
        /// Pause between empty polls.
        interval: Duration,
    },
    /// WebSocket: the HTTP streaming transport's objects, one per text
    /// frame (`ws://`, or `wss://` for an `https://` server).
    WebSocket,
}

/// How to subscribe.
#[derive(Clone, Debug)]
pub struct SubscribeOptions {
    /// The transport.
    pub transport: Transport,
    /// Resume after this id or cursor.
    pub since: Option<String>,
    /// Without `since`: start with the newest N messages of each channel.
    pub backlog: Option<usize>,
    /// Reconnection and time-outs. A Comet stream sends heartbeats, so the
    /// default declares it dead after 60 s of silence.
    pub reconnect: Reconnect,
    /// Bounds on what one line or event may hold.
    pub limits: ParserLimits,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            transport: Transport::Sse,
            since: None,
            backlog: None,
            reconnect: Reconnect {
                idle_timeout: Some(Duration::from_secs(60)),
                ..Reconnect::default()
            },
            limits: ParserLimits::default(),
        }
    }
}

/// A message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Its id; resuming after it yields what followed.
    pub id: String,
    /// Its channel.
    pub channel: String,
    /// Its event type (`message` by default).
    pub event: String,
    /// Its data.
    pub data: String,
}

/// Messages of a channel were missed (history no longer held them, or the
/// server's history was reset).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Gap {
    /// The channel.
    pub channel: String,
    /// `trimmed` or `reset`.
    pub reason: String,
}

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A message.
    Message(Message),
    /// A gap signal.
    Gap(Gap),
}

/// A running subscription: a `Stream` of items that ends only on a fatal
/// error (yielded first) or when the server answers 204.
pub struct Subscription {
    inner: BoxStream<'static, Result<Item, Error>>,
}

impl Stream for Subscription {
    type Item = Result<Item, Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

pub(crate) async fn start(
    client: &Client,
    channels: &[&str],
    mut options: SubscribeOptions,
) -> Result<Subscription, Error> {
    let list = ChannelList::parse(&channels.join(","), usize::MAX).map_err(|error| Error::Url {
        url: channels.join(","),
        reason: error.to_string(),
    })?;
    if options.since.is_none() && options.backlog.is_none() {
        options.since = Some(now(client, &list, &options.reconnect).await?);
    }
    let only_channel = (list.len() == 1).then(|| list.names()[0].to_string());
    let inner = match options.transport {
        Transport::Sse => {
            let mut url = client.url(&format!("sse/{list}"))?;
            if options.since.is_none()
                && let Some(backlog) = options.backlog
            {
                url.query_pairs_mut()
                    .append_pair("backlog", &backlog.to_string());
            }
            let source = EventSource::new(
                client.http.clone(),
                url,
                EventSourceOptions {
                    last_event_id: options.since.clone(),
                    token: client.token.clone(),
                    limits: options.limits,
                    reconnect: options.reconnect,
                },
            );
            source
                .filter_map(move |event| {
                    let item = event.and_then(|event| sse_item(event, only_channel.as_deref()));
                    std::future::ready(item.transpose())
                })
                // An expired subscription ends after saying so.
                .scan(false, |ended, item| {
                    if *ended {
                        return std::future::ready(None);
                    }
                    *ended = matches!(item, Err(Error::Expired));
                    std::future::ready(Some(item))
                })
                .boxed()
        }
        Transport::Stream
        | Transport::LongPoll { .. }
        | Transport::Poll { .. }
        | Transport::WebSocket => {
            let reader = JsonReader {
                client: client.clone(),
                channels: list.to_string(),
                cursor: options.since.clone(),
                backlog: options.backlog,
                options,
                body: None,
                socket: None,
                buffer: BytesMut::new(),
                pending: VecDeque::new(),
                failures: 0,
                wait: None,
                done: false,
            };
            futures::stream::unfold(reader, |mut reader| async move {
                let item = reader.next().await?;
                Some((item, reader))
            })
            .boxed()
        }
    };
    Ok(Subscription { inner })
}

/// The cursor of "now" for `list`: a short poll's answer, within the open
/// time-out. Transient answers (a full server, a proxy's 502) are retried
/// with backoff, as every later request of the subscription is; failing to
/// reach the server at all is an error, since nothing was started yet.
async fn now(client: &Client, list: &ChannelList, reconnect: &Reconnect) -> Result<String, Error> {
    let url = client.url(&format!("poll/{list}"))?;
    let mut failures = 0;
    loop {
        let request = client.authorized(client.http.get(url.clone())).send();
        let response = tokio::time::timeout(reconnect.open_timeout, request)
            .await
            .map_err(|_| Error::Timeout(reconnect.open_timeout))??;
        if crate::error::is_transient(response.status()) {
            let error = crate::status_error(response).await;
            failures += 1;
            let wait = reconnect.delay(reconnect.initial, failures);
            tracing::info!(%error, "retrying in {wait:?}");
            tokio::time::sleep(wait).await;
            continue;
        }
        if response.status() != reqwest::StatusCode::OK {
            return Err(crate::status_error(response).await);
        }
        let answer: PollAnswer = response
            .json()
            .await
            .map_err(|error| Error::Protocol(format!("a poll answer: {error}")))?;
        return Ok(answer.cursor);
    }
}

/// The item an SSE event is; `None` for a heartbeat event.
fn sse_item(event: crate::SseEvent, only_channel: Option<&str>) -> Result<Option<Item>, Error> {
    match event.event_type.as_str() {
        GAP_EVENT => {
            return serde_json::from_str::<Gap>(&event.data)
                .map(|gap| Some(Item::Gap(gap)))
                .map_err(|error| Error::Protocol(format!("a gap event: {error}")));
        }
        EXPIRED_EVENT_TYPE => return Err(Error::Expired),
        HEARTBEAT_EVENT_TYPE => return Ok(None),
        _ => {}
    }
    // A message id names its channel after the first '/'.
    let channel = event
        .last_event_id
        .split_once('/')
        .map(|(_, channel)| channel.to_string())
        .or_else(|| only_channel.map(str::to_string))
        .unwrap_or_default();
    Ok(Some(Item::Message(Message {
        id: event.last_event_id,
        channel,
        event: event.event_type,
        data: event.data,
    })))
}

/// A line of the NDJSON stream, or an element of a poll answer.
#[derive(Deserialize)]
struct JsonMessage {
    id: String,
    channel: String,
    event: String,
    data: String,
}

#[derive(Deserialize)]
struct PollAnswer {
    messages: Vec<JsonMessage>,
    cursor: String,
    #[serde(default)]
    gaps: Vec<Gap>,
}

impl From<JsonMessage> for Message {
    fn from(json: JsonMessage) -> Self {
        Message {
            id: json.id,
            channel: json.channel,
            event: json.event,
            data: json.data,
        }
    }
}

/// An open WebSocket.
type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The JSON transports: the NDJSON stream, WebSocket and polling.
struct JsonReader {
    client: Client,
    channels: String,
    options: SubscribeOptions,
    /// Where to resume; `None` until known.
    cursor: Option<String>,
    /// Asked for on the first request only.
    backlog: Option<usize>,
    body: Option<BoxStream<'static, reqwest::Result<bytes::Bytes>>>,
    socket: Option<WebSocket>,
    buffer: BytesMut,
    pending: VecDeque<Result<Item, Error>>,
    failures: u32,
    wait: Option<Duration>,
    done: bool,
}

enum Attempt {
    /// Items or a stream are ready.
    Done,
    /// The server could not be reached: try again later.
    Retry,
}

impl JsonReader {
    async fn next(&mut self) -> Option<Result<Item, Error>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            if self.body.is_some() {
                self.read_stream().await;
                continue;
            }
            if self.socket.is_some() {
                self.read_socket().await;
                continue;
            }
            if let Some(wait) = self.wait.take() {
                tokio::time::sleep(wait).await;
            }
            let attempt = match self.options.transport {
                Transport::Stream => self.open_stream().await,
                Transport::WebSocket => self.open_socket().await,
                _ => self.poll().await,
            };
            match attempt {
                Ok(Attempt::Done) => self.failures = 0,
                Ok(Attempt::Retry) => {
                    self.failures = self.failures.saturating_add(1);
                    self.wait = Some(
                        self.options
                            .reconnect
                            .delay(self.options.reconnect.initial, self.failures),
                    );
                }
                Err(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
            }
        }
    }

    fn url(&self, transport: &str) -> Result<reqwest::Url, Error> {
        let mut url = self.client.url(&format!("{transport}/{}", self.channels))?;
        {
            let mut query = url.query_pairs_mut();
            match (&self.cursor, self.backlog) {
                (Some(cursor), _) => {
                    query.append_pair("since", cursor);
                }
                (None, Some(backlog)) => {
                    query.append_pair("backlog", &backlog.to_string());
                }
                (None, None) => {}
            }
            if let Transport::LongPoll { wait } = self.options.transport {
                query.append_pair("wait", &format!("{:.3}", wait.as_secs_f64()));
            }
        }
        Ok(url)
    }

    /// Sends a GET; `Ok(None)` when the server could not be reached.
    async fn get(
        &mut self,
        url: reqwest::Url,
        hold: Duration,
    ) -> Result<Option<reqwest::Response>, Error> {
        let limit = self.options.reconnect.open_timeout + hold;
        let request = self.client.authorized(self.client.http.get(url));
        let response = match tokio::time::timeout(limit, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot reach the server: retrying");
                return Ok(None);
            }
            Err(_) => {
                tracing::debug!("no answer within {limit:?}: retrying");
                return Ok(None);
            }
        };
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            self.done = true;
            return Ok(None);
        }
        if crate::error::is_transient(response.status()) {
            let error = crate::status_error(response).await;
            tracing::info!(%error, "retrying");
            return Ok(None);
        }
        if response.status() != reqwest::StatusCode::OK {
            return Err(crate::status_error(response).await);
        }
        Ok(Some(response))
    }

    async fn open_stream(&mut self) -> Result<Attempt, Error> {
        let url = self.url("stream")?;
        let Some(response) = self.get(url, Duration::ZERO).await? else {
            return Ok(if self.done {
                Attempt::Done
            } else {
                Attempt::Retry
            });
        };
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !is_media_type(&content_type, "application/x-ndjson") {
            return Err(Error::ContentType {
                expected: "application/x-ndjson",
                found: content_type,
            });
        }
        // The backlog is asked for again until a message gives a cursor:
        // a stream that drops before its first line has delivered nothing,
        // and resuming from "now" would skip the backlog.
        self.buffer.clear();
        self.body = Some(response.bytes_stream().boxed());
        Ok(Attempt::Done)
    }

    async fn read_stream(&mut self) {
        let Some(body) = self.body.as_mut() else {
            return;
        };
        let next = match self.options.reconnect.idle_timeout {
            Some(limit) => tokio::time::timeout(limit, body.next())
                .await
                .ok()
                .flatten(),
            None => body.next().await,
        };
        let chunk = match next {
            Some(Ok(chunk)) => chunk,
            _ => {
                // Ended, failed or silent: resume from the cursor.
                self.body = None;
                self.reconnect_soon();
                return;
            }
        };
        self.buffer.extend_from_slice(&chunk);
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line = self.buffer.split_to(end + 1);
            if let Err(error) = self.stream_line(&line[..end]) {
                self.fail(error);
                return;
            }
        }
        if self.buffer.len() > self.options.limits.max_line {
            self.fail(Error::Protocol(format!(
                "a stream line is longer than the limit of {} bytes",
                self.options.limits.max_line
            )));
        }
    }

    fn stream_line(&mut self, line: &[u8]) -> Result<(), Error> {
        #[derive(Deserialize)]
        struct GapLine {
            gap: Gap,
        }
        let value: serde_json::Value = serde_json::from_slice(line)
            .map_err(|error| Error::Protocol(format!("a stream line is not JSON: {error}")))?;
        if value.get("expired").is_some() {
            // The token expired: the server ends the stream; so does this.
            return Err(Error::Expired);
        }
        if value.get("id").is_some() {
            let message: JsonMessage = serde_json::from_value(value)
                .map_err(|error| Error::Protocol(format!("a message line: {error}")))?;
            self.cursor = Some(message.id.clone());
            self.backlog = None;
            self.pending.push_back(Ok(Item::Message(message.into())));
        } else if value.get("gap").is_some() {
            let gap: GapLine = serde_json::from_value(value)
                .map_err(|error| Error::Protocol(format!("a gap line: {error}")))?;
            self.pending.push_back(Ok(Item::Gap(gap.gap)));
        }
        // Heartbeats, and lines of kinds this client does not know, pass.
        Ok(())
    }

    fn fail(&mut self, error: Error) {
        self.pending.push_back(Err(error));
        self.body = None;
        self.socket = None;
        self.done = true;
    }

    /// Resumes from the cursor after the usual first delay.
    fn reconnect_soon(&mut self) {
        self.wait = Some(
            self.options
                .reconnect
                .delay(self.options.reconnect.initial, 0),
        );
    }

    async fn open_socket(&mut self) -> Result<Attempt, Error> {
        use tokio_tungstenite::tungstenite::Error as WsError;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut url = self.url("ws")?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        // Both schemes are special in the URL standard: the change is allowed.
        let _ = url.set_scheme(scheme);
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|error| Error::Url {
                url: url.to_string(),
                reason: error.to_string(),
            })?;
        if let Some(token) = &self.client.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.headers_mut().insert("authorization", value);
        }
        let limit = self.options.reconnect.open_timeout;
        let connected =
            tokio::time::timeout(limit, tokio_tungstenite::connect_async(request)).await;
        match connected {
            Ok(Ok((socket, _))) => {
                self.socket = Some(socket);
                Ok(Attempt::Done)
            }
            Ok(Err(WsError::Http(response))) => {
                let status = response.status();
                let body = response.body().as_deref().unwrap_or_default();
                let error = crate::status_error_of(status.as_u16(), body);
                if crate::error::is_transient(status) {
                    tracing::info!(%error, "retrying");
                    return Ok(Attempt::Retry);
                }
                Err(error)
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot open the WebSocket: retrying");
                Ok(Attempt::Retry)
            }
            Err(_) => {
                tracing::debug!("no WebSocket within {limit:?}: retrying");
                Ok(Attempt::Retry)
            }
        }
    }

    async fn read_socket(&mut self) {
        use tokio_tungstenite::tungstenite::Message as Frame;
        let Some(socket) = self.socket.as_mut() else {
            return;
        };
        let next = match self.options.reconnect.idle_timeout {
            Some(limit) => tokio::time::timeout(limit, socket.next())
                .await
                .ok()
                .flatten(),
            None => socket.next().await,
        };
        match next {
            Some(Ok(Frame::Text(text))) => {
                if text.len() > self.options.limits.max_line {
                    self.fail(Error::Protocol(format!(
                        "a WebSocket frame is longer than the limit of {} bytes",
                        self.options.limits.max_line
                    )));
                } else if let Err(error) = self.stream_line(text.as_bytes()) {
                    self.fail(error);
                }
            }
            Some(Ok(Frame::Close(Some(close)))) if u16::from(close.code) == TOKEN_EXPIRED => {
                self.fail(Error::Expired);
            }
            // Pings are answered by the socket itself.
            Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => {}
            _ => {
                // Closed, failed, silent or not a text frame: resume from
                // the cursor.
                self.socket = None;
                self.reconnect_soon();
            }
        }
    }

    async fn poll(&mut self) -> Result<Attempt, Error> {
        let hold = match self.options.transport {
            Transport::LongPoll { wait } => wait,
            _ => Duration::ZERO,
        };
        let url = self.url("poll")?;
        let Some(response) = self.get(url, hold).await? else {
            return Ok(if self.done {
                Attempt::Done
            } else {
                Attempt::Retry
            });
        };
        let answer: PollAnswer = match response.json().await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(%error, "a poll answer was cut: retrying");
                return Ok(Attempt::Retry);
            }
        };
        self.backlog = None;
        let delivered = !answer.messages.is_empty() || !answer.gaps.is_empty();
        self.pending
            .extend(answer.gaps.into_iter().map(|gap| Ok(Item::Gap(gap))));
        self.pending.extend(
            answer
                .messages
                .into_iter()
                .map(|message| Ok(Item::Message(message.into()))),
        );
        self.cursor = Some(answer.cursor);
        if let Transport::Poll { interval } = self.options.transport
            && !delivered
        {
            self.wait = Some(interval);
        }
        Ok(Attempt::Done)
    }
}
