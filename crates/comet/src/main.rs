//! The `comet` command. Parses the command line and hands over; the work is
//! in the library crates.

mod bench;
mod cli;
mod serve;
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
        cli::Command::Serve(args) => serve::run(args),
        cli::Command::Bench(command) => bench::run(command),
    }
}
