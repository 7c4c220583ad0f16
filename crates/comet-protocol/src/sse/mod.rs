//! `text/event-stream`: the encoder the server sends with (this module:
//! byte-exact framing of messages, gaps, the reconnection delay and
//! heartbeats) and the parser clients read with ([`EventStreamParser`]).
//!
//! Framing rules (API.md, "Server-Sent Events"):
//! - a message is `id:`, then `event:` unless the type is `message`, then one
//!   `data:` line per line of the data, then a blank line;
//! - data lines split at LF, CR and CRLF alike, since an SSE parser treats
//!   all three as line ends; the client therefore receives LF line ends;
//! - an empty line of data is a bare `data:`; a non-empty one is `data: `
//!   followed by the line, so a line starting with a space survives the
//!   parser's removal of one leading space;
//! - a heartbeat is a single comment line with no blank line after it, so no
//!   client, however lenient, can turn it into an empty event.

mod parser;

use bytes::{BufMut, Bytes, BytesMut};
pub use parser::{Event, EventStreamParser, ParseError, ParserLimits, StreamEnd};

use crate::{Cursor, Gap, Message, json};

/// The reserved event type that signals a gap. Publishers cannot use it.
pub const GAP_EVENT: &str = "comet-gap";

/// The heartbeat: one comment line.
pub const HEARTBEAT: &[u8] = b": heartbeat\n";

/// The reserved event type that ends a stream whose credential expired.
pub const EXPIRED_EVENT_TYPE: &str = "comet-expired";

/// The last event of a stream whose credential expired: the client gets a
/// fresh token and resumes from its last id.
pub const EXPIRED_EVENT: &[u8] = b"event: comet-expired\ndata: {\"expired\":true}\n\n";

/// The reserved event type of heartbeats sent as events.
pub const HEARTBEAT_EVENT_TYPE: &str = "comet-heartbeat";

/// A heartbeat as an event, for clients that ask for it
/// (`?heartbeat=event`): the browser's `EventSource` hides comments from
/// page code, so a page can only tell that a silent stream is still alive
/// (not cut by a NAT or a sleeping laptop) from events it sees.
pub const HEARTBEAT_EVENT: &[u8] = b"event: comet-heartbeat\ndata: heartbeat\n\n";

/// The media type of an SSE response.
pub const CONTENT_TYPE: &str = "text/event-stream; charset=utf-8";

/// The stream's opening: the reconnection delay in milliseconds and, when
/// given, the subscription's starting cursor as an `id:` followed by a blank
/// line. With no data buffered that blank line dispatches no event, but it
/// sets the client's last event id, so an `EventSource` that reconnects
/// before its first message resumes from where it started instead of from
/// a new "now", and loses nothing published in between.
pub fn encode_opening(retry_ms: u64, cursor: Option<&Cursor>) -> Bytes {
    match cursor {
        Some(cursor) => Bytes::from(format!("retry: {retry_ms}\nid: {cursor}\n\n")),
        None => Bytes::from(format!("retry: {retry_ms}\n\n")),
    }
}

/// A message's frame: `id`, optional `event`, `data` lines, blank line.
pub fn encode_message(message: &Message) -> Bytes {
    let data = message.data().as_str();
    let mut frame = BytesMut::with_capacity(data.len() + 64);
    frame.put_slice(b"id: ");
    frame.put_slice(message.id().to_string().as_bytes());
    frame.put_u8(b'\n');
    if !message.event().is_default() {
        frame.put_slice(b"event: ");
        frame.put_slice(message.event().as_str().as_bytes());
        frame.put_u8(b'\n');
    }
    put_data_lines(&mut frame, data);
    frame.put_u8(b'\n');
    frame.freeze()
}

/// A gap signal: an event of type [`GAP_EVENT`] whose data is the JSON gap
/// object (`{"channel":…,"reason":…}`). It carries no `id`, so a browser's
/// `EventSource` keeps the id of the last message it really received.
pub fn encode_gap(gap: &Gap) -> Bytes {
    let mut frame = BytesMut::with_capacity(96);
    frame.put_slice(b"event: ");
    frame.put_slice(GAP_EVENT.as_bytes());
    frame.put_slice(b"\ndata: ");
    frame.put_slice(&json::encode_gap_object(gap));
    frame.put_slice(b"\n\n");
    frame.freeze()
}

/// Writes one `data:` line per line of `data`, splitting at LF, CR and CRLF.
fn put_data_lines(frame: &mut BytesMut, data: &str) {
    let bytes = data.as_bytes();
    let mut start = 0;
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'\n' => {
                put_data_line(frame, &bytes[start..index]);
                index += 1;
                start = index;
            }
            b'\r' => {
                put_data_line(frame, &bytes[start..index]);
                index += 1;
                if bytes.get(index) == Some(&b'\n') {
                    index += 1;
                }
                start = index;
            }
            _ => index += 1,
        }
    }
    put_data_line(frame, &bytes[start..]);
}

fn put_data_line(frame: &mut BytesMut, line: &[u8]) {
    if line.is_empty() {
        frame.put_slice(b"data:\n");
    } else {
        frame.put_slice(b"data: ");
        frame.put_slice(line);
        frame.put_u8(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelName, Data, Epoch, EventType, GapReason, Seq};

    fn message(event: &str, data: &'static str) -> Message {
        Message::new(
            Epoch::new("ep").unwrap(),
            Seq(7),
            ChannelName::new("news").unwrap(),
            EventType::new(event).unwrap(),
            Data::from(data),
            0,
        )
    }

    fn check(event: &str, data: &'static str, expected: &str) {
        let frame = encode_message(&message(event, data));
        assert_eq!(
            std::str::from_utf8(&frame).unwrap(),
            expected,
            "event {event:?}, data {data:?}"
        );
    }

    #[test]
    fn frames_plain_data() {
        check("message", "hello", "id: ep-7/news\ndata: hello\n\n");
    }

    #[test]
    fn frames_custom_event_types() {
        check("update", "x", "id: ep-7/news\nevent: update\ndata: x\n\n");
    }

    #[test]
    fn splits_every_kind_of_line_end() {
        check("message", "a\nb", "id: ep-7/news\ndata: a\ndata: b\n\n");
        check("message", "a\rb", "id: ep-7/news\ndata: a\ndata: b\n\n");
        check("message", "a\r\nb", "id: ep-7/news\ndata: a\ndata: b\n\n");
        check(
            "message",
            "a\n\r\nb\r\rc",
            "id: ep-7/news\ndata: a\ndata:\ndata: b\ndata:\ndata: c\n\n",
        );
    }

    #[test]
    fn keeps_trailing_and_empty_lines() {
        check("message", "a\n", "id: ep-7/news\ndata: a\ndata:\n\n");
        check("message", "\n", "id: ep-7/news\ndata:\ndata:\n\n");
        check("message", "", "id: ep-7/news\ndata:\n\n");
    }

    #[test]
    fn keeps_leading_spaces_and_colons() {
        check("message", " a", "id: ep-7/news\ndata:  a\n\n");
        check("message", ":a", "id: ep-7/news\ndata: :a\n\n");
    }

    #[test]
    fn frames_gaps_retry_and_heartbeats() {
        let gap = Gap {
            channel: ChannelName::new("news").unwrap(),
            reason: GapReason::Trimmed,
        };
        assert_eq!(
            &encode_gap(&gap)[..],
            b"event: comet-gap\ndata: {\"channel\":\"news\",\"reason\":\"trimmed\"}\n\n"
        );
        assert_eq!(&encode_opening(3000, None)[..], b"retry: 3000\n\n");
        let cursor = Cursor::new(Epoch::new("ep").unwrap(), Seq(4));
        assert_eq!(
            &encode_opening(3000, Some(&cursor))[..],
            b"retry: 3000\nid: ep-4\n\n"
        );
        assert_eq!(HEARTBEAT, b": heartbeat\n");
        assert_eq!(
            HEARTBEAT_EVENT,
            b"event: comet-heartbeat\ndata: heartbeat\n\n"
        );
    }

    /// A heartbeat event is one a browser dispatches (an event with empty
    /// data would not be), of the reserved type.
    #[test]
    fn a_heartbeat_event_is_dispatched_by_a_conforming_parser() {
        let mut parser = EventStreamParser::new(ParserLimits::default());
        let mut events = Vec::new();
        parser.feed(HEARTBEAT_EVENT, &mut events).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, HEARTBEAT_EVENT_TYPE);
        assert_eq!(events[0].data, "heartbeat");
    }

    #[test]
    fn shares_one_frame_between_callers() {
        let message = message("message", "x");
        let first = message.sse_frame().clone();
        let second = message.sse_frame().clone();
        assert_eq!(first.as_ptr(), second.as_ptr());
    }
}
