//! `comet pub`: publishes one message, or the NDJSON lines of a file in
//! batches, and prints the server's answer for each message.

use std::io::{BufRead, Read, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use comet_client::{Client, Publication};
use comet_protocol::json::data_of_json_value;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::cli::PubArgs;

pub fn run(args: PubArgs) -> anyhow::Result<ExitCode> {
    let mut client = Client::new(&args.server)?.with_publish_retries(args.retries);
    if let Some(token) = &args.token {
        client = client.with_token(token.clone());
    }
    let runtime = crate::single_threaded()?;
    let mut out = std::io::stdout().lock();
    if let Some(file) = &args.batch {
        let messages = read_batch_file(file)?;
        for chunk in messages.chunks(args.batch_size.max(1)) {
            for published in runtime.block_on(client.publish_batch(chunk))? {
                writeln!(out, "{}", crate::json_line::published(&published))?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let channel = args.channel.as_deref().context("a channel is needed")?;
    let data = match args.data.as_deref() {
        None | Some("-") => {
            let mut data = Vec::new();
            std::io::stdin()
                .read_to_end(&mut data)
                .context("reading the message from standard input")?;
            data
        }
        Some(data) => data.as_bytes().to_vec(),
    };
    let published = runtime.block_on(client.publish_with_key(
        channel,
        args.event.as_deref(),
        data,
        args.idempotency_key.as_deref(),
    ))?;
    writeln!(out, "{}", crate::json_line::published(&published))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    channel: String,
    #[serde(default)]
    event: Option<String>,
    data: Box<RawValue>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// The messages of an NDJSON file (`-`: standard input); blank lines are
/// skipped, and a line that is not a message is an error naming it, before
/// anything is published.
fn read_batch_file(file: &str) -> anyhow::Result<Vec<Publication>> {
    let reader: Box<dyn BufRead> = if file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let opened = std::fs::File::open(file).with_context(|| format!("opening {file}"))?;
        Box::new(std::io::BufReader::new(opened))
    };
    let mut messages = Vec::new();
    for (number, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {file}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = match serde_json::from_str(&line) {
            Ok(parsed) => parsed,
            Err(error) => bail!(
                "{file}, line {}: not a message {{\"channel\", \"data\", \"event\"?, \"idempotency_key\"?}}: {error}",
                number + 1
            ),
        };
        let data = data_of_json_value(parsed.data.get())
            .with_context(|| format!("{file}, line {}: the data", number + 1))?;
        messages.push(Publication {
            channel: parsed.channel,
            event: parsed.event,
            data,
            idempotency_key: parsed.idempotency_key,
        });
    }
    Ok(messages)
}
