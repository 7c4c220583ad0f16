//! The `comet` command. Parses the command line and hands over; the work is
//! in the library crates.

mod auth;
mod bench;
mod cli;
mod config;
mod json_line;
mod limits;
mod parse;
mod publish;
mod reload;
mod serve;
mod subscribe;
mod token;
mod units;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match config::parse(&argv) {
        Ok(cli) => cli,
        Err(error) => {
            eprintln!("comet: {error:#}");
            return ExitCode::from(2);
        }
    };
    match run(cli, argv) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("comet: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli, argv: Vec<std::ffi::OsString>) -> anyhow::Result<ExitCode> {
    match cli.command {
        cli::Command::Serve(args) => serve::run(*args, argv),
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
