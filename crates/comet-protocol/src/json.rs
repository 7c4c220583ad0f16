//! The JSON encodings: message objects, NDJSON lines, gap signals,
//! heartbeats and the poll response.
//!
//! A message object is `{"id","channel","event","data"}` (API.md). The JSON
//! transports signal a gap with a `gap` field: a line `{"gap":{…}}` on the
//! NDJSON stream, and a `gaps` array in a poll response. A line without an
//! `id` is never a message; the stream's heartbeat is `{"heartbeat":true}`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{Gap, Message, ws};

/// The media type of an HTTP streaming response.
pub const NDJSON_CONTENT_TYPE: &str = "application/x-ndjson";

/// The NDJSON heartbeat line.
pub const HEARTBEAT_LINE: &[u8] = b"{\"heartbeat\":true}\n";

/// The NDJSON line that ends a stream whose credential expired.
pub const EXPIRED_LINE: &[u8] = b"{\"expired\":true}\n";

/// The data a batch message's JSON `data` value stands for (API.md,
/// `POST /pub`): a string's text as it is, any other value's compact JSON
/// text (the whitespace between tokens dropped, strings and numbers kept
/// exactly as written). `value` must be valid JSON text.
pub fn data_of_json_value(value: &str) -> Result<String, serde_json::Error> {
    let value = value.trim();
    if value.starts_with('"') {
        return serde_json::from_str(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in value.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    Ok(out)
}

/// Appends `text` as a JSON string literal, quotes included.
pub fn put_json_string(out: &mut BytesMut, text: &str) {
    let mut writer = out.writer();
    // Writing a &str into memory cannot fail.
    let _ = serde_json::to_writer(&mut writer, text);
}

/// One NDJSON line: the message object and LF.
pub fn encode_message_line(message: &Message) -> Bytes {
    encode_message_frames(message).slice(ws::MAX_HEADER..)
}

/// The message object with room before it, where the header of a
/// WebSocket text frame holding it ends, and LF after it: one buffer from
/// which both the NDJSON line and the WebSocket frame are sliced (see
/// [`Message::ws_frame`]).
pub fn encode_message_frames(message: &Message) -> Bytes {
    let mut out = BytesMut::with_capacity(ws::MAX_HEADER + message.data().len() + 96);
    out.put_bytes(0, ws::MAX_HEADER);
    out.put_slice(b"{\"id\":\"");
    out.put_slice(message.id().to_string().as_bytes());
    out.put_slice(b"\",\"channel\":\"");
    // Channel names need no escaping: their alphabet has no JSON specials.
    out.put_slice(message.channel().as_str().as_bytes());
    out.put_slice(b"\",\"event\":");
    put_json_string(&mut out, message.event().as_str());
    out.put_slice(b",\"data\":");
    put_json_string(&mut out, message.data().as_str());
    out.put_slice(b"}\n");
    let object = out.len() - ws::MAX_HEADER - 1;
    ws::put_text_header_before(&mut out[..ws::MAX_HEADER], object);
    out.freeze()
}

/// The gap object `{"channel":…,"reason":…}`.
pub fn encode_gap_object(gap: &Gap) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    put_gap_object(&mut out, gap);
    out.freeze()
}

fn put_gap_object(out: &mut BytesMut, gap: &Gap) {
    out.put_slice(b"{\"channel\":\"");
    out.put_slice(gap.channel.as_str().as_bytes());
    out.put_slice(b"\",\"reason\":\"");
    out.put_slice(gap.reason.as_str().as_bytes());
    out.put_slice(b"\"}");
}

/// The NDJSON gap line `{"gap":{"channel":…,"reason":…}}`.
pub fn encode_gap_line(gap: &Gap) -> Bytes {
    let mut out = BytesMut::with_capacity(80);
    out.put_slice(b"{\"gap\":");
    put_gap_object(&mut out, gap);
    out.put_slice(b"}\n");
    out.freeze()
}

/// Builds a poll response, `{"messages":[…],"cursor":"…"}`, with a `gaps`
/// array when the subscriber missed messages.
#[derive(Default)]
pub struct PollBody {
    messages: BytesMut,
    gaps: BytesMut,
}

impl PollBody {
    /// An empty response.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a message (its shared object bytes are copied once here).
    pub fn push_message(&mut self, message: &Message) {
        if !self.messages.is_empty() {
            self.messages.put_u8(b',');
        }
        self.messages.put_slice(&message.json_object());
    }

    /// Adds a gap signal.
    pub fn push_gap(&mut self, gap: &Gap) {
        if !self.gaps.is_empty() {
            self.gaps.put_u8(b',');
        }
        put_gap_object(&mut self.gaps, gap);
    }

    /// Bytes of message objects added so far.
    pub fn messages_len(&self) -> usize {
        self.messages.len()
    }

    /// The finished body, with `cursor` (a [`Cursor`](crate::Cursor) or a
    /// message id).
    pub fn finish(self, cursor: &dyn std::fmt::Display) -> Bytes {
        let mut out = BytesMut::with_capacity(self.messages.len() + self.gaps.len() + 64);
        out.put_slice(b"{\"messages\":[");
        out.put_slice(&self.messages);
        out.put_slice(b"],\"cursor\":\"");
        out.put_slice(cursor.to_string().as_bytes());
        out.put_u8(b'"');
        if !self.gaps.is_empty() {
            out.put_slice(b",\"gaps\":[");
            out.put_slice(&self.gaps);
            out.put_u8(b']');
        }
        out.put_u8(b'}');
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelName, Cursor, Data, Epoch, EventType, GapReason, Seq};

    fn message(event: &str, data: &'static str) -> Message {
        Message::new(
            Epoch::new("ep").unwrap(),
            Seq(3),
            ChannelName::new("a.b").unwrap(),
            EventType::new(event).unwrap(),
            Data::from(data),
            0,
        )
    }

    #[test]
    fn encodes_message_lines_exactly() {
        let line = encode_message_line(&message("message", "hi"));
        assert_eq!(
            &line[..],
            b"{\"id\":\"ep-3/a.b\",\"channel\":\"a.b\",\"event\":\"message\",\"data\":\"hi\"}\n"
        );
    }

    #[test]
    fn escapes_what_json_needs() {
        let data = "q\"b\\n\nr\rt\tz\u{0}é\u{2028}";
        let line = encode_message_line(&message("ty\"pe", data));
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["data"], data);
        assert_eq!(value["event"], "ty\"pe");
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
    }

    #[test]
    fn builds_poll_bodies() {
        let cursor = Cursor::new(Epoch::new("ep").unwrap(), Seq(9));
        assert_eq!(
            &PollBody::new().finish(&cursor)[..],
            b"{\"messages\":[],\"cursor\":\"ep-9\"}"
        );
        let mut body = PollBody::new();
        body.push_gap(&Gap {
            channel: ChannelName::new("a").unwrap(),
            reason: GapReason::Reset,
        });
        body.push_message(&message("message", "1"));
        body.push_message(&message("message", "2"));
        let value: serde_json::Value = serde_json::from_slice(&body.finish(&cursor)).unwrap();
        assert_eq!(value["messages"].as_array().unwrap().len(), 2);
        assert_eq!(value["gaps"][0]["reason"], "reset");
        assert_eq!(value["cursor"], "ep-9");
    }

    #[test]
    fn encodes_gap_lines() {
        let gap = Gap {
            channel: ChannelName::new("a").unwrap(),
            reason: GapReason::Trimmed,
        };
        assert_eq!(
            &encode_gap_line(&gap)[..],
            b"{\"gap\":{\"channel\":\"a\",\"reason\":\"trimmed\"}}\n"
        );
    }
}
