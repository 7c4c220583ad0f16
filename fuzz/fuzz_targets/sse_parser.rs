//! The event-stream parser on arbitrary bytes: it never panics, never
//! exceeds its limits, and the outcome never depends on how the bytes were
//! chunked. The first byte of the input picks the chunk size and the limits.
#![no_main]

use comet_protocol::sse::{Event, EventStreamParser, ParseError, ParserLimits, StreamEnd};
use libfuzzer_sys::fuzz_target;

fn parse(stream: &[u8], chunk: usize, limits: ParserLimits) -> (Vec<Event>, Result<StreamEnd, ParseError>) {
    let mut parser = EventStreamParser::new(limits);
    let mut events = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        if let Err(error) = parser.feed(piece, &mut events) {
            return (events, Err(error));
        }
    }
    (events, Ok(parser.finish()))
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, stream)) = input.split_first() else {
        return;
    };
    let limits = if control & 0x80 == 0 {
        ParserLimits::default()
    } else {
        ParserLimits {
            max_line: 1 + (control as usize & 0x1f),
            max_event: 1 + (control as usize & 0x3f) * 2,
        }
    };
    let whole = parse(stream, stream.len(), limits);
    let chunked = parse(stream, 1 + (control as usize & 0x0f), limits);
    assert_eq!(whole, chunked, "chunking changed the outcome");
    for event in &whole.0 {
        // The limit counts what is buffered: the data with its final LF
        // (removed at dispatch) and a named type (not the default).
        assert!(event.data.len() < limits.max_event);
        assert!(!event.last_event_id.contains('\0'));
    }
});
