//! Plain readers for the streaming transports, written from the SSE and
//! NDJSON formats and not from Comet's code, so they check it independently.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::within;

/// One dispatched SSE event, as the HTML standard's parser would report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type (`message` when none was given).
    pub event: String,
    /// The data, lines joined by LF.
    pub data: String,
    /// The last event id in force when it was dispatched.
    pub id: String,
}

/// Reads a `text/event-stream` body incrementally.
pub struct SseStream {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    buffer: BytesMut,
    /// Every byte received so far, for byte-exact assertions.
    pub raw: Vec<u8>,
    data: String,
    event: String,
    /// The last event id.
    pub last_id: String,
    /// The last `retry:` value seen.
    pub retry: Option<u64>,
    /// Comment lines seen.
    pub comments: usize,
    /// True once the body ended (cleanly or not).
    pub ended: bool,
    /// Why the body ended, if it did not end cleanly.
    pub error: Option<String>,
}

impl SseStream {
    /// Wraps a response (its status and headers are the caller's to check).
    pub fn new(response: reqwest::Response) -> Self {
        Self::from_body(response.bytes_stream().boxed())
    }

    /// Wraps any stream of body bytes.
    pub fn from_body(body: BoxStream<'static, reqwest::Result<Bytes>>) -> Self {
        Self {
            body,
            buffer: BytesMut::new(),
            raw: Vec::new(),
            data: String::new(),
            event: String::new(),
            last_id: String::new(),
            retry: None,
            comments: 0,
            ended: false,
            error: None,
        }
    }

    /// Receives more bytes; false when the body ended.
    async fn fill(&mut self) -> bool {
        match within("bytes from an SSE stream", self.body.next()).await {
            Some(Ok(chunk)) => {
                self.raw.extend_from_slice(&chunk);
                self.buffer.extend_from_slice(&chunk);
                true
            }
            Some(Err(error)) => {
                // A dropped connection ends the stream, as for a browser.
                self.error = Some(error.to_string());
                self.ended = true;
                false
            }
            None => {
                self.ended = true;
                false
            }
        }
    }

    /// Takes one complete line (without its end) from the buffer.
    fn take_line(&mut self) -> Option<String> {
        let end = self
            .buffer
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')?;
        // A CR at the very end may be the first half of a CRLF.
        if self.buffer[end] == b'\r' && end + 1 == self.buffer.len() {
            return None;
        }
        let line = self.buffer.split_to(end);
        let terminator = if self.buffer.starts_with(b"\r\n") {
            2
        } else {
            1
        };
        let _ = self.buffer.split_to(terminator);
        Some(String::from_utf8_lossy(&line).into_owned())
    }

    /// The next event, or `None` if the stream ended first. Fails the test
    /// if no event comes within [`TIMEOUT`](crate::TIMEOUT), heartbeats or
    /// not.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        within("an SSE event", async {
            loop {
                while let Some(line) = self.take_line() {
                    if let Some(event) = self.process(&line) {
                        return Some(event);
                    }
                }
                if !self.fill().await {
                    return None;
                }
            }
        })
        .await
    }

    /// Reads the stream's opening (up to its first blank line) and returns
    /// the id it announces, if any.
    pub async fn opening_id(&mut self) -> Option<String> {
        self.until_raw(b"\n\n").await;
        let opening = String::from_utf8_lossy(&self.raw).into_owned();
        let head = opening.split("\n\n").next().unwrap_or_default();
        head.lines()
            .find_map(|line| line.strip_prefix("id: "))
            .map(str::to_string)
    }

    /// Reads until `count` events arrived, failing if the stream ends first.
    pub async fn events(&mut self, count: usize) -> Vec<SseEvent> {
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            match self.next_event().await {
                Some(event) => events.push(event),
                None => panic!("SSE stream ended after {} of {count} events", events.len()),
            }
        }
        events
    }

    /// Reads until the raw bytes received contain `needle`.
    pub async fn until_raw(&mut self, needle: &[u8]) {
        while !self.raw.windows(needle.len()).any(|w| w == needle) {
            assert!(
                self.fill().await,
                "stream ended before {:?} arrived",
                String::from_utf8_lossy(needle)
            );
        }
    }

    /// Reads until the server ends the body.
    pub async fn until_end(&mut self) {
        while self.fill().await {}
    }

    /// One line, by the rules of the HTML standard's event stream parser.
    fn process(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let mut data = std::mem::take(&mut self.data);
            if data.is_empty() {
                return None;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            return Some(SseEvent {
                event: if event.is_empty() {
                    "message".into()
                } else {
                    event
                },
                data,
                id: self.last_id.clone(),
            });
        }
        if line.starts_with(':') {
            self.comments += 1;
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "event" => self.event = value.to_string(),
            "id" if !value.contains('\0') => self.last_id = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
        None
    }
}

/// Reads an NDJSON body line by line.
pub struct NdjsonStream {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    buffer: BytesMut,
    /// True once the body ended (cleanly or not).
    pub ended: bool,
    /// Why the body ended, if it did not end cleanly.
    pub error: Option<String>,
}

impl NdjsonStream {
    /// Wraps a response.
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: response.bytes_stream().boxed(),
            buffer: BytesMut::new(),
            ended: false,
            error: None,
        }
    }

    /// The next line parsed as JSON, or `None` when the stream ended.
    pub async fn next_value(&mut self) -> Option<serde_json::Value> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line = self.buffer.split_to(end + 1);
                let value = serde_json::from_slice(&line[..end]).unwrap_or_else(|e| {
                    panic!(
                        "not a JSON line: {:?} ({e})",
                        String::from_utf8_lossy(&line)
                    )
                });
                return Some(value);
            }
            match within("a line from an NDJSON stream", self.body.next()).await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(error)) => {
                    // A dropped connection may cut a line: it is not a message.
                    self.error = Some(error.to_string());
                    self.ended = true;
                    return None;
                }
                None => {
                    if !self.buffer.is_empty() {
                        self.error = Some("the body ended inside a line".into());
                    }
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    /// The next line that is a message (has an `id`), skipping heartbeats;
    /// gap lines are returned too. Fails the test if none comes within
    /// [`TIMEOUT`](crate::TIMEOUT), heartbeats or not.
    pub async fn next_item(&mut self) -> Option<serde_json::Value> {
        within("an NDJSON item", async {
            loop {
                let value = self.next_value().await?;
                if value.get("heartbeat").is_none() {
                    return Some(value);
                }
            }
        })
        .await
    }
}
