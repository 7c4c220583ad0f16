//! `comet sub`: follows channels of a Comet server (any transport) or any
//! SSE URL, and prints what arrives. Reconnection and resume are the
//! client's: the command runs until interrupted, `--count` messages were
//! printed, or the server ends the subscription.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use comet_client::{
    Client, EventSource, EventSourceOptions, Item, Reconnect, SubscribeOptions, Transport,
};
use futures::StreamExt;

use crate::cli::{Format, SubArgs, SubTransport};

pub fn run(args: SubArgs) -> anyhow::Result<ExitCode> {
    let runtime = crate::single_threaded()?;
    runtime.block_on(async move {
        if args.target.starts_with("http://") || args.target.starts_with("https://") {
            any_server(args).await
        } else {
            comet_channels(args).await
        }
    })
}

async fn comet_channels(args: SubArgs) -> anyhow::Result<ExitCode> {
    let mut client = Client::new(&args.server)?;
    if let Some(token) = &args.token {
        client = client.with_token(token.clone());
    }
    let transport = match args.transport {
        SubTransport::Sse => Transport::Sse,
        SubTransport::Stream => Transport::Stream,
        SubTransport::Poll => Transport::LongPoll {
            wait: Duration::from_secs(30),
        },
        SubTransport::Shortpoll => Transport::Poll {
            interval: Duration::from_secs(1),
        },
        SubTransport::Ws => Transport::WebSocket,
    };
    let channels: Vec<&str> = args.target.split(',').collect();
    let options = SubscribeOptions {
        transport,
        since: args.since.clone(),
        backlog: args.backlog,
        ..SubscribeOptions::default()
    };
    let mut subscription = client
        .subscribe(&channels, options)
        .await
        .with_context(|| format!("cannot subscribe to {} on {}", args.target, args.server))?;
    let mut printed = 0;
    let mut out = std::io::stdout().lock();
    while let Some(item) = subscription.next().await {
        match item? {
            Item::Message(message) => {
                match args.format {
                    Format::Json => {
                        writeln!(out, "{}", crate::json_line::message(&message))?;
                    }
                    Format::Text if message.event == "message" => {
                        writeln!(out, "{}: {}", message.channel, message.data)?
                    }
                    Format::Text => writeln!(
                        out,
                        "{} [{}]: {}",
                        message.channel, message.event, message.data
                    )?,
                }
                out.flush()?;
                printed += 1;
                if args.count.is_some_and(|count| printed >= count) {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            Item::Gap(gap) => {
                match args.format {
                    Format::Json => {
                        writeln!(out, "{}", crate::json_line::gap(&gap))?;
                    }
                    Format::Text => writeln!(
                        out,
                        "-- gap in {}: messages were missed ({})",
                        gap.channel,
                        match gap.reason.as_str() {
                            "trimmed" => "no longer in the server's history",
                            "reset" => "the server's history was reset",
                            other => other,
                        }
                    )?,
                }
                out.flush()?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn any_server(args: SubArgs) -> anyhow::Result<ExitCode> {
    if args.transport != SubTransport::Sse {
        bail!("a URL is read as Server-Sent Events; --transport applies to channels only");
    }
    if args.backlog.is_some() {
        bail!("--backlog applies to Comet channels, not to a URL");
    }
    let url = args
        .target
        .parse()
        .with_context(|| format!("{:?} is not a URL", args.target))?;
    let http = reqwest::Client::builder()
        .build()
        .context("creating the HTTP client")?;
    let mut source = EventSource::new(
        http,
        url,
        EventSourceOptions {
            last_event_id: args.since.clone(),
            token: args.token.clone(),
            reconnect: Reconnect::default(),
            ..EventSourceOptions::default()
        },
    );
    let mut printed = 0;
    let mut out = std::io::stdout().lock();
    while let Some(event) = source.next().await {
        let event = event?;
        match args.format {
            Format::Json => {
                writeln!(out, "{}", crate::json_line::event(&event))?;
            }
            Format::Text if event.event_type == "message" => writeln!(out, "{}", event.data)?,
            Format::Text => writeln!(out, "[{}] {}", event.event_type, event.data)?,
        }
        out.flush()?;
        printed += 1;
        if args.count.is_some_and(|count| printed >= count) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
