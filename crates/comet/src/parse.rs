//! `comet parse`: reads a `text/event-stream` on standard input with the
//! WHATWG-exact parser, as a client that reconnected with
//! `--last-event-id` would, and prints one JSON line per dispatched event,
//! then `{"end": true, "retry": …, "lastEventId": …}`: the reconnection
//! time if a valid `retry` was seen, and the id a reconnection would send.

use std::io::{BufWriter, Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use comet_protocol::sse::{EventStreamParser, ParserLimits};

use crate::cli::ParseArgs;

pub fn run(args: ParseArgs) -> anyhow::Result<ExitCode> {
    let limits = ParserLimits {
        max_line: usize::try_from(args.max_line.0).context("--max-line is too large")?,
        max_event: usize::try_from(args.max_event.0).context("--max-event is too large")?,
    };
    let mut parser =
        EventStreamParser::resuming(limits, args.last_event_id.as_deref().unwrap_or(""));
    let mut input = std::io::stdin().lock();
    let mut output = BufWriter::new(std::io::stdout().lock());
    let mut chunk = vec![0u8; 64 * 1024];
    let mut events = Vec::new();
    loop {
        let read = input.read(&mut chunk).context("reading standard input")?;
        if read == 0 {
            break;
        }
        let parsed = parser.feed(&chunk[..read], &mut events);
        for event in events.drain(..) {
            writeln!(output, "{}", crate::json_line::event(&event))?;
        }
        if let Err(error) = parsed {
            output.flush()?;
            return Err(error).context("the event stream cannot be parsed");
        }
    }
    let end = parser.finish();
    writeln!(output, "{}", crate::json_line::end(&end))?;
    output.flush()?;
    Ok(ExitCode::SUCCESS)
}
