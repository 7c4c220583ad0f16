//! `comet pub`: publishes one message and prints the server's answer.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use comet_client::Client;

use crate::cli::PubArgs;

pub fn run(args: PubArgs) -> anyhow::Result<ExitCode> {
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
    let mut client = Client::new(&args.server)?;
    if let Some(token) = &args.token {
        client = client.with_token(token.clone());
    }
    let runtime = crate::single_threaded()?;
    let published =
        runtime.block_on(client.publish_event(&args.channel, args.event.as_deref(), data))?;
    writeln!(
        std::io::stdout().lock(),
        "{}",
        crate::json_line::published(&published)
    )?;
    Ok(ExitCode::SUCCESS)
}
