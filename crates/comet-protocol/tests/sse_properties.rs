//! Properties of the event-stream parser, over generated streams:
//! - chunking never matters: any split of a stream into chunks yields the
//!   same events, the same end state and the same error as one chunk;
//! - the server's encoder and the parser agree: every message framed by
//!   `sse::encode_message` parses back to its type, its data (with CR and
//!   CRLF read as LF, as SSE defines) and its id.

use comet_protocol::sse::{self, Event, EventStreamParser, ParseError, ParserLimits, StreamEnd};
use comet_protocol::{ChannelName, Data, Epoch, EventType, Message, Seq};
use proptest::prelude::*;

/// Pieces that make event streams interesting: field names, separators,
/// every line end, BOMs, NUL, invalid and multi-byte UTF-8.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"data".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"data: ".to_vec()),
        Just(b"event:".to_vec()),
        Just(b"id:".to_vec()),
        Just(b"id: 7".to_vec()),
        Just(b"retry:".to_vec()),
        Just(b"retry: 1500".to_vec()),
        Just(b":".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\0".to_vec()),
        Just(b"\xFF".to_vec()),
        Just(b"\xE2\x9C\x93".to_vec()),
        Just(b"\xE2\x9C".to_vec()),
        "[a-z0-9 ]{0,6}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..4),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(piece(), 0..60).prop_map(|pieces| pieces.concat())
}

type Outcome = (Vec<Event>, Result<StreamEnd, ParseError>);

fn parse_in_chunks(stream: &[u8], cuts: &[usize], limits: ParserLimits) -> Outcome {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut parser = EventStreamParser::new(limits);
    let mut events = Vec::new();
    let mut start = 0;
    for point in points.into_iter().chain([stream.len()]) {
        if let Err(error) = parser.feed(&stream[start..point], &mut events) {
            return (events, Err(error));
        }
        start = point;
    }
    (events, Ok(parser.finish()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn chunking_never_changes_the_outcome(
        stream in stream(),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let limits = ParserLimits::default();
        let whole = parse_in_chunks(&stream, &[], limits);
        let chunked = parse_in_chunks(&stream, &cuts, limits);
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn chunking_never_changes_the_outcome_at_the_limits(
        stream in stream(),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        max_line in 1usize..40,
        max_event in 1usize..80,
    ) {
        let limits = ParserLimits { max_line, max_event };
        let whole = parse_in_chunks(&stream, &[], limits);
        let chunked = parse_in_chunks(&stream, &cuts, limits);
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn byte_at_a_time_is_the_same_as_all_at_once(stream in stream()) {
        let every_byte: Vec<usize> = (0..stream.len()).collect();
        let limits = ParserLimits::default();
        prop_assert_eq!(
            parse_in_chunks(&stream, &[], limits),
            parse_in_chunks(&stream, &every_byte, limits)
        );
    }

    #[test]
    fn what_the_encoder_frames_the_parser_reads_back(
        event_type in "[^\r\n\0]{1,20}",
        data in "(\\PC|\r|\n|\r\n| ){0,80}",
        seq in any::<u64>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        prop_assume!(event_type.len() <= 64);
        let message = Message::new(
            Epoch::new("k3x9q2mf").unwrap(),
            Seq(seq),
            ChannelName::new("news").unwrap(),
            EventType::new(&event_type).unwrap(),
            Data::from(data.clone()),
            0,
        );
        let frame = sse::encode_message(&message);
        let (events, end) = parse_in_chunks(&frame, &cuts, ParserLimits::default());
        let expected = Event {
            event_type: event_type.clone(),
            data: data.replace("\r\n", "\n").replace('\r', "\n"),
            last_event_id: message.id().to_string(),
        };
        prop_assert_eq!(events, vec![expected]);
        prop_assert_eq!(end.map(|e| e.last_event_id), Ok(message.id().to_string()));
    }
}
