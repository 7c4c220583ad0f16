//! `comet bench`: runs a load scenario from this process against a server
//! in another, and prints its figures.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, bail};
use comet_bench::publish::{self, PublishPlan};

use crate::cli::{BenchCommand, BenchPublishArgs};

pub fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    // One thread: pinned to a core of its own, the load generator then
    // competes with the server for nothing but the network stack.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match command {
            BenchCommand::Publish(args) => publish_scenario(args).await,
        }
    })
}

/// Resolves `http://HOST:PORT` to a loopback socket address.
fn loopback(server: &str) -> anyhow::Result<SocketAddr> {
    let authority = server
        .strip_prefix("http://")
        .context("--server must be an http:// URL")?
        .trim_end_matches('/');
    let address: SocketAddr = authority
        .replace("localhost", "127.0.0.1")
        .parse()
        .with_context(|| format!("{authority:?} is not HOST:PORT"))?;
    if !address.ip().is_loopback() {
        bail!("benchmarks run against loopback only, not {address}");
    }
    Ok(address)
}

async fn publish_scenario(args: BenchPublishArgs) -> anyhow::Result<ExitCode> {
    let plan = PublishPlan {
        address: loopback(&args.server)?,
        path_prefix: args.path_prefix,
        publishers: args.publishers.max(1),
        duration: args.duration.0,
        size: args.size,
        channels: args.channels.max(1),
    };
    let report = publish::run(&plan).await.context("publishing")?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "publish publishers={} size={} channels={}: {:.0} acknowledged/s ({} in {:.1?}, {} refused)  latency {}",
        plan.publishers,
        plan.size,
        plan.channels,
        report.rate(),
        report.acknowledged,
        report.elapsed,
        report.failed,
        report.latencies
    )?;
    Ok(ExitCode::SUCCESS)
}
