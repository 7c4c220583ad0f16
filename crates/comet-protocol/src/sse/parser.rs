//! An incremental `text/event-stream` parser that follows the WHATWG HTML
//! Standard, "Server-sent events", §9.2.5 (parsing an event stream) and
//! §9.2.6 (interpreting it), to the letter, for bytes arriving in any
//! chunking. It does no I/O: feed it bytes, take the events.
//!
//! What the standard asks, and where it is done here:
//! - the stream is UTF-8, decoded with U+FFFD for every invalid sequence
//!   (`Utf8Decoder`, which keeps an incomplete sequence for the next
//!   chunk), and one leading U+FEFF BOM is dropped, even when its bytes
//!   arrive split;
//! - lines end at CRLF, LF or a lone CR; a CR at the end of a chunk ends the
//!   line at once, and an LF that starts the next chunk is then skipped;
//! - a line starting with `:` is a comment; otherwise the field name is what
//!   precedes the first `:` (the whole line when there is none, the value
//!   then being empty) and one leading space of the value is dropped;
//! - `event` sets the type, `data` appends the value and LF, `id` sets the
//!   last event id unless the value contains NUL, `retry` sets the
//!   reconnection time when the value is all ASCII digits; other fields are
//!   ignored;
//! - a blank line dispatches: the last event id *string* takes the buffer's
//!   value; if no data was buffered nothing is dispatched; otherwise the
//!   final LF of the data is removed and the event goes out with type
//!   `message` unless one was set; data and type buffers are then reset;
//! - at the end of the stream an unfinished line and event are discarded.
//!
//! Unlike the standard's unbounded buffers, a line and an event have a
//! configurable maximum size ([`ParserLimits`]); going past it is a
//! [`ParseError`], never unbounded memory.

use std::fmt;

/// Most bytes the parser holds for one line and for one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParserLimits {
    /// Longest line (without its end), in bytes of UTF-8.
    pub max_line: usize,
    /// Largest event (buffered data plus type), in bytes of UTF-8.
    pub max_event: usize,
}

impl Default for ParserLimits {
    /// 1 MiB lines, 16 MiB events.
    fn default() -> Self {
        Self {
            max_line: 1 << 20,
            max_event: 16 << 20,
        }
    }
}

/// A dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The event type (`message` unless the stream named another).
    pub event_type: String,
    /// The data, its lines joined by LF.
    pub data: String,
    /// The last event id when the event was dispatched.
    pub last_event_id: String,
}

/// The stream went past a [`ParserLimits`] bound.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A line longer than `max_line`.
    #[error("an event-stream line is longer than the limit of {limit} bytes")]
    LineTooLong {
        /// The limit.
        limit: usize,
    },
    /// An event larger than `max_event`.
    #[error("an event is larger than the limit of {limit} bytes")]
    EventTooLarge {
        /// The limit.
        limit: usize,
    },
}

/// What a reconnecting client needs once the stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEnd {
    /// The reconnection time set by the last valid `retry`, in ms.
    pub retry: Option<u64>,
    /// The id a reconnection would send as `Last-Event-ID` (empty: none).
    pub last_event_id: String,
}

/// The parser. Feed it chunks with [`feed`](Self::feed).
pub struct EventStreamParser {
    limits: ParserLimits,
    decoder: Utf8Decoder,
    /// True until the first character was seen (a BOM may still come).
    at_start: bool,
    /// The previous chunk ended with CR: an LF starting this one is its pair.
    after_cr: bool,
    line: String,
    data: String,
    event_type: String,
    /// The last event ID buffer (set by `id` fields).
    id_buffer: String,
    /// The last event ID string (set from the buffer at each blank line).
    last_event_id: String,
    retry: Option<u64>,
}

impl EventStreamParser {
    /// A parser for a new connection.
    pub fn new(limits: ParserLimits) -> Self {
        Self::resuming(limits, "")
    }

    /// A parser for a connection made to resume after `last_event_id`: as
    /// in a browser, the id persists until the stream sets another.
    pub fn resuming(limits: ParserLimits, last_event_id: &str) -> Self {
        Self {
            limits,
            decoder: Utf8Decoder::default(),
            at_start: true,
            after_cr: false,
            line: String::new(),
            data: String::new(),
            event_type: String::new(),
            id_buffer: last_event_id.to_string(),
            last_event_id: last_event_id.to_string(),
            retry: None,
        }
    }

    /// The reconnection time set by the last valid `retry` field, in ms.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The id a reconnection would send now.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Takes the next chunk of the stream and appends the events it
    /// completes to `events`, in order. On an error, the events completed
    /// before it are in `events`; the parser must not be fed more.
    pub fn feed(&mut self, chunk: &[u8], events: &mut Vec<Event>) -> Result<(), ParseError> {
        let decoded = self.decoder.decode(chunk);
        let mut text = decoded.as_str();
        if self.at_start && !text.is_empty() {
            self.at_start = false;
            text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
        }
        while !text.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if let Some(rest) = text.strip_prefix('\n') {
                    text = rest;
                    continue;
                }
            }
            match text.find(['\r', '\n']) {
                Some(end) => {
                    self.extend_line(&text[..end])?;
                    self.after_cr = text.as_bytes()[end] == b'\r';
                    text = &text[end + 1..];
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.process_line(&line)? {
                        events.push(event);
                    }
                    self.line = line;
                    self.line.clear();
                }
                None => {
                    self.extend_line(text)?;
                    break;
                }
            }
        }
        Ok(())
    }

    /// Ends the stream: an unfinished line or event is discarded.
    pub fn finish(self) -> StreamEnd {
        StreamEnd {
            retry: self.retry,
            last_event_id: self.last_event_id,
        }
    }

    fn extend_line(&mut self, text: &str) -> Result<(), ParseError> {
        if self.line.len() + text.len() > self.limits.max_line {
            return Err(ParseError::LineTooLong {
                limit: self.limits.max_line,
            });
        }
        self.line.push_str(text);
        Ok(())
    }

    fn process_line(&mut self, line: &str) -> Result<Option<Event>, ParseError> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => {
                self.event_type.clear();
                self.event_type.push_str(value);
                self.check_event_size()?;
            }
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.check_event_size()?;
            }
            // An id containing NUL is ignored.
            "id" if !value.contains('\0') => {
                self.id_buffer.clear();
                self.id_buffer.push_str(value);
            }
            // Only all-digit values count; digits beyond u64 mean "a very
            // long time".
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = Some(value.parse().unwrap_or(u64::MAX));
            }
            _ => {}
        }
        Ok(None)
    }

    fn check_event_size(&self) -> Result<(), ParseError> {
        if self.data.len() + self.event_type.len() > self.limits.max_event {
            return Err(ParseError::EventTooLarge {
                limit: self.limits.max_event,
            });
        }
        Ok(())
    }

    fn dispatch(&mut self) -> Option<Event> {
        self.last_event_id.clone_from(&self.id_buffer);
        if self.data.is_empty() {
            self.event_type.clear();
            return None;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        let event_type = match std::mem::take(&mut self.event_type) {
            empty if empty.is_empty() => "message".to_string(),
            named => named,
        };
        Some(Event {
            event_type,
            data,
            last_event_id: self.last_event_id.clone(),
        })
    }
}

impl fmt::Debug for EventStreamParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStreamParser")
            .field("buffered_line", &self.line.len())
            .field("buffered_data", &self.data.len())
            .field("last_event_id", &self.last_event_id)
            .field("retry", &self.retry)
            .finish()
    }
}

/// UTF-8 decoding with replacement, across chunk boundaries: an incomplete
/// sequence at the end of a chunk waits for the next one; an invalid one
/// becomes U+FFFD (one per maximal invalid subpart, as the Encoding
/// Standard's decoder does).
#[derive(Default)]
struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    fn decode(&mut self, chunk: &[u8]) -> String {
        let joined;
        let mut rest: &[u8] = if self.pending.is_empty() {
            chunk
        } else {
            let mut bytes = std::mem::take(&mut self.pending);
            bytes.extend_from_slice(chunk);
            joined = bytes;
            &joined
        };
        let mut text = String::with_capacity(rest.len());
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    return text;
                }
                Err(error) => {
                    let (valid, after) = rest.split_at(error.valid_up_to());
                    text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match error.error_len() {
                        Some(invalid) => {
                            text.push('\u{FFFD}');
                            rest = &after[invalid..];
                        }
                        None => {
                            self.pending = after.to_vec();
                            return text;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(stream: &[u8]) -> (Vec<Event>, StreamEnd) {
        let mut parser = EventStreamParser::new(ParserLimits::default());
        let events = feed(&mut parser, stream);
        (events, parser.finish())
    }

    fn feed(parser: &mut EventStreamParser, chunk: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        parser.feed(chunk, &mut events).unwrap();
        events
    }

    fn event(event_type: &str, data: &str, id: &str) -> Event {
        Event {
            event_type: event_type.into(),
            data: data.into(),
            last_event_id: id.into(),
        }
    }

    #[test]
    fn spec_example_stock_ticker() {
        let (events, _) = parse(b"data: YHOO\ndata: +2\ndata: 10\n\n");
        assert_eq!(events, [event("message", "YHOO\n+2\n10", "")]);
    }

    #[test]
    fn spec_example_four_blocks() {
        let stream = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n";
        let (events, end) = parse(stream);
        assert_eq!(
            events,
            [
                event("message", "first event", "1"),
                event("message", "second event", ""),
                event("message", " third event", ""),
            ]
        );
        assert_eq!(end.last_event_id, "");
    }

    #[test]
    fn spec_example_empty_data_and_discarded_tail() {
        let (events, _) = parse(b"data\n\ndata\ndata\n\ndata:");
        assert_eq!(
            events,
            [event("message", "", ""), event("message", "\n", "")]
        );
    }

    #[test]
    fn spec_example_space_after_colon_is_optional() {
        let (events, _) = parse(b"data:test\n\ndata: test\n\n");
        assert_eq!(
            events,
            [event("message", "test", ""), event("message", "test", "")]
        );
    }

    #[test]
    fn spec_example_event_types() {
        let stream = b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n";
        let (events, _) = parse(stream);
        assert_eq!(
            events,
            [
                event("add", "73857293", ""),
                event("remove", "2153", ""),
                event("add", "113411", ""),
            ]
        );
    }

    #[test]
    fn all_three_line_ends_and_a_split_crlf() {
        let mut parser = EventStreamParser::new(ParserLimits::default());
        let mut events = feed(&mut parser, b"data: a\r");
        events.extend(feed(&mut parser, b"\ndata: b\rdata: c\n\r"));
        events.extend(feed(&mut parser, b"\n"));
        assert_eq!(events, [event("message", "a\nb\nc", "")]);
        // The LF after the split CRLF was not a second, empty line.
        let mut parser = EventStreamParser::new(ParserLimits::default());
        let mut events = feed(&mut parser, b"data: x\r");
        events.extend(feed(&mut parser, b"\n"));
        assert!(events.is_empty(), "CR + LF across chunks is one line end");
        assert_eq!(feed(&mut parser, b"\n"), [event("message", "x", "")]);
    }

    #[test]
    fn one_bom_is_removed_even_when_split() {
        let mut parser = EventStreamParser::new(ParserLimits::default());
        assert!(feed(&mut parser, b"\xEF").is_empty());
        assert!(feed(&mut parser, b"\xBB").is_empty());
        let events = feed(&mut parser, b"\xBFdata: x\n\n");
        assert_eq!(events, [event("message", "x", "")]);
        // A second BOM is part of the line: "\u{FEFF}data" is not a field we know.
        let (events, _) = parse(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: y\n\n");
        assert!(events.is_empty());
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters_even_across_chunks() {
        let (events, _) = parse(b"data: a\xFFb\xC3\n\n");
        assert_eq!(events, [event("message", "a\u{FFFD}b\u{FFFD}", "")]);
        let mut parser = EventStreamParser::new(ParserLimits::default());
        assert!(feed(&mut parser, b"data: \xE2\x9C").is_empty());
        let events = feed(&mut parser, b"\x93\n\n");
        assert_eq!(events, [event("message", "\u{2713}", "")]);
    }

    #[test]
    fn field_rules() {
        let stream =
            b"no colon\ndata\nunknown: x\n:comment\nid: a\0b\nretry: 12x\nretry:\nretry: 250\n\n";
        let (events, end) = parse(stream);
        assert_eq!(events, [event("message", "", "")]);
        assert_eq!(end.retry, Some(250));
        assert_eq!(end.last_event_id, "", "an id with NUL is ignored");
    }

    #[test]
    fn the_last_event_id_persists_and_blank_lines_reset_the_type() {
        let stream = b"id: 7\nevent: x\ndata: 1\n\nevent: y\n\ndata: 2\n\nid: 8\n\n";
        let (events, end) = parse(stream);
        assert_eq!(events, [event("x", "1", "7"), event("message", "2", "7")]);
        assert_eq!(
            end.last_event_id, "8",
            "a blank line without data still sets the id"
        );
    }

    #[test]
    fn a_resuming_parser_keeps_its_id_until_the_stream_sets_one() {
        let mut parser = EventStreamParser::resuming(ParserLimits::default(), "41");
        let events = feed(&mut parser, b"data: a\n\nid: 42\ndata: b\n\n");
        assert_eq!(
            events,
            [event("message", "a", "41"), event("message", "b", "42")]
        );
    }

    #[test]
    fn an_unfinished_event_is_dropped_at_the_end() {
        let (events, end) = parse(b"data: done\n\ndata: unfinished\nid: 9\n");
        assert_eq!(events, [event("message", "done", "")]);
        assert_eq!(
            end.last_event_id, "",
            "never dispatched, so the id is not in force"
        );
    }

    #[test]
    fn lines_and_events_are_bounded() {
        let limits = ParserLimits {
            max_line: 16,
            max_event: 32,
        };
        let mut parser = EventStreamParser::new(limits);
        assert!(feed(&mut parser, b"data: 0123456789").is_empty());
        assert_eq!(
            parser.feed(b"abcdef", &mut Vec::new()),
            Err(ParseError::LineTooLong { limit: 16 })
        );
        let mut parser = EventStreamParser::new(limits);
        let mut events = Vec::new();
        let stream = b"data: 1\n\ndata: 0123456789\ndata: 0123456789\ndata: 0123456789\n";
        assert_eq!(
            parser.feed(stream, &mut events),
            Err(ParseError::EventTooLarge { limit: 32 })
        );
        assert_eq!(
            events,
            [event("message", "1", "")],
            "what came before the error stays"
        );
    }
}
