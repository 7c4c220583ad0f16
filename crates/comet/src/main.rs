//! The `comet` command. Parses the command line and hands over; the work is
//! in the library crates.

mod auth;
mod bench;
mod cli;
mod json_line;
mod limits;
mod parse;
mod publish;
mod serve;
mod subscribe;
mod token;
mod units;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("comet: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        cli::Command::Serve(args) => serve::run(*args),
        cli::Command::Pub(args) => publish::run(args),
        cli::Command::Sub(args) => subscribe::run(args),
        cli::Command::Parse(args) => parse::run(args),
        cli::Command::Token(args) => token::run(args),
        cli::Command::Bench(command) => bench::run(command),
    }
}

/// A runtime on the calling thread, for the client commands.
fn single_threaded() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
