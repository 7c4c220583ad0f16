//! The message, its data, and the gap signal.
//!
//! A [`Message`] is immutable once stored. Each transport's framing of it is
//! computed at most once, on first use, and then shared by every subscriber:
//! the SSE frame and the JSON line are the same bytes for a subscriber to one
//! channel and for one to many, because ids are store-wide positions rather
//! than per-subscription state.

use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;

use crate::{ChannelName, Cursor, Epoch, EventType, MessageId, Seq, json, sse, ws};

/// Message data: UTF-8 text, possibly with LF, CR or CRLF. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Data(Bytes);

/// Data that is not valid UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("data is not valid UTF-8 (invalid byte at offset {offset})")]
pub struct InvalidData {
    /// Offset of the first invalid byte.
    pub offset: usize,
}

impl Data {
    /// Accepts bytes that are valid UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, InvalidData> {
        match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(Self(bytes)),
            Err(error) => Err(InvalidData {
                offset: error.valid_up_to(),
            }),
        }
    }

    /// The data as text.
    pub fn as_str(&self) -> &str {
        // Validated on construction; the fallback is unreachable.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The data as bytes (shared).
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for empty data.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Data {
    fn from(text: String) -> Self {
        Self(Bytes::from(text))
    }
}

impl From<&'static str> for Data {
    fn from(text: &'static str) -> Self {
        Self(Bytes::from_static(text.as_bytes()))
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A stored message.
pub struct Message {
    epoch: Epoch,
    seq: Seq,
    channel: ChannelName,
    event: EventType,
    data: Data,
    published_at_ms: u64,
    sse_frame: OnceLock<Bytes>,
    /// The JSON object, with a WebSocket frame header before it and LF
    /// after it (`json::encode_message_frames`).
    json_frames: OnceLock<Bytes>,
}

impl Message {
    /// A message at position `seq` of the history `epoch`.
    pub fn new(
        epoch: Epoch,
        seq: Seq,
        channel: ChannelName,
        event: EventType,
        data: Data,
        published_at_ms: u64,
    ) -> Self {
        Self {
            epoch,
            seq,
            channel,
            event,
            data,
            published_at_ms,
            sse_frame: OnceLock::new(),
            json_frames: OnceLock::new(),
        }
    }

    /// Its position in the store-wide order.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// The history it belongs to.
    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    /// Its id (`{epoch}-{seq}/{channel}`), which is also a cursor to resume
    /// after it.
    pub fn id(&self) -> MessageId {
        MessageId {
            position: self.cursor(),
            channel: self.channel.clone(),
        }
    }

    /// Its position: the cursor to resume after it.
    pub fn cursor(&self) -> Cursor {
        Cursor::new(self.epoch.clone(), self.seq)
    }

    /// Its channel.
    pub fn channel(&self) -> &ChannelName {
        &self.channel
    }

    /// Its event type.
    pub fn event(&self) -> &EventType {
        &self.event
    }

    /// Its data.
    pub fn data(&self) -> &Data {
        &self.data
    }

    /// When the store accepted it, in milliseconds since the Unix epoch. Used
    /// for retention by age only; ordering never looks at it.
    pub fn published_at_ms(&self) -> u64 {
        self.published_at_ms
    }

    /// The complete SSE frame, encoded once and shared.
    pub fn sse_frame(&self) -> &Bytes {
        self.sse_frame.get_or_init(|| sse::encode_message(self))
    }

    fn json_frames(&self) -> &Bytes {
        self.json_frames
            .get_or_init(|| json::encode_message_frames(self))
    }

    /// The JSON object followed by LF (one NDJSON line), encoded once and
    /// shared.
    pub fn json_line(&self) -> Bytes {
        self.json_frames().slice(ws::MAX_HEADER..)
    }

    /// The JSON object alone (the line without its LF), sharing the same
    /// bytes.
    pub fn json_object(&self) -> Bytes {
        let frames = self.json_frames();
        frames.slice(ws::MAX_HEADER..frames.len() - 1)
    }

    /// The WebSocket text frame holding the JSON object, sharing the same
    /// bytes: the same object for every subscriber, encoded once.
    pub fn ws_frame(&self) -> Bytes {
        let frames = self.json_frames();
        let object = frames.len() - ws::MAX_HEADER - 1;
        let header = ws::text_header_len(object);
        frames.slice(ws::MAX_HEADER - header..frames.len() - 1)
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id().to_string())
            .field("channel", &self.channel)
            .field("event", &self.event)
            .field("data", &self.data)
            .finish()
    }
}

/// Why a subscriber missed messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GapReason {
    /// The resume point is older than the retained history: messages between
    /// it and the oldest retained one were removed by retention.
    Trimmed,
    /// The resume point belongs to another history (a different epoch, for
    /// example after the store was wiped) or to no position this history has
    /// reached. Everything still retained is delivered.
    Reset,
}

impl GapReason {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Trimmed => "trimmed",
            GapReason::Reset => "reset",
        }
    }
}

/// An in-band signal that a subscriber missed messages of one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The channel whose messages were missed.
    pub channel: ChannelName,
    /// Why.
    pub reason: GapReason,
}
