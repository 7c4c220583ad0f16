//! `comet bench`: runs a load scenario from this process against a server
//! in another, and prints one line of figures, `key=value` pairs that
//! `bench/compare.sh` reads.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use comet_bench::delivery::{self, DeliveryPlan};
use comet_bench::idle::{self, IdlePlan};
use comet_bench::longpoll::{self, LongPollPlan};
use comet_bench::publish::{self, PublishPlan};
use comet_bench::target::{Kind, Target};
use comet_bench::{Completeness, Latencies};

use crate::cli::{BenchCommand, BenchTarget, TargetKind};

pub fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    // One thread: pinned to a core of its own, the load generator then
    // competes with the server for nothing but the network stack.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let line = runtime.block_on(tokio::task::LocalSet::new().run_until(scenario(command)))?;
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(ExitCode::SUCCESS)
}

async fn scenario(command: BenchCommand) -> anyhow::Result<String> {
    Ok(match command {
        BenchCommand::Idle(args) => {
            let target = target(&args.target)?;
            let report = idle::run(&IdlePlan {
                target,
                server_pid: args.server_pid,
                connections: args.connections,
                connect_concurrency: args.concurrency.max(1),
                channels: args.channels.max(1),
                settle: Duration::from_secs(2),
                transport: args.transport.into(),
            })
            .await
            .context("holding idle connections")?;
            format!(
                "idle target={} transport={} connections={} channels={}: open_s={:.2} rss_before_mib={:.1} rss_after_mib={:.1} bytes_per_connection={:.0}",
                kind(&args.target),
                transport(args.transport),
                report.connections,
                args.channels,
                report.open_time.as_secs_f64(),
                report.before as f64 / 1048576.0,
                report.after as f64 / 1048576.0,
                report.per_connection(),
            )
        }
        BenchCommand::Fanout(args) => delivery_line("fanout", &args, false).await?,
        BenchCommand::Channels(args) => delivery_line("channels", &args, true).await?,
        BenchCommand::Longpoll(args) => {
            let report = longpoll::run(&LongPollPlan {
                target: target(&args.target)?,
                clients: args.clients,
                rate: args.rate,
                duration: args.duration.0,
                size: args.size,
            })
            .await
            .context("long polling")?;
            format!(
                "longpoll target={} clients={} rate={}: published={} deliveries={} polls={} {} {}",
                kind(&args.target),
                args.clients,
                args.rate,
                report.published,
                report.deliveries,
                report.polls,
                latency_fields(&report.latencies),
                completeness_fields(&report.completeness),
            )
        }
        BenchCommand::Publish(args) => {
            let plan = PublishPlan {
                address: target(&args.target)?.address,
                path_prefix: "/pub/".into(),
                publishers: args.publishers.max(1),
                duration: args.duration.0,
                size: args.size,
                channels: args.channels.max(1),
                fresh_channels: args.fresh_channels,
                token: args.token.clone(),
                batch: args.batch.max(1),
                idempotency_keys: args.idempotency_keys,
            };
            if plan.batch > 1 && plan.fresh_channels {
                bail!("--batch and --fresh-channels do not go together");
            }
            if plan.batch > 1 && args.target.target != TargetKind::Comet {
                bail!("--batch needs a Comet server: Nchan takes one message per request");
            }
            let report = publish::run(&plan).await.context("publishing")?;
            let channels = if plan.fresh_channels {
                "fresh".to_string()
            } else {
                plan.channels.to_string()
            };
            format!(
                "publish target={} publishers={} size={} channels={} batch={} keys={}: publishes_per_s={:.0} acknowledged={} refused={} {}",
                kind(&args.target),
                plan.publishers,
                plan.size,
                channels,
                plan.batch,
                plan.idempotency_keys,
                report.rate(),
                report.acknowledged,
                report.failed,
                latency_fields(&report.latencies),
            )
        }
    })
}

/// The transport's name in a result line.
fn transport(transport: crate::cli::BenchTransport) -> &'static str {
    match transport {
        crate::cli::BenchTransport::Sse => "sse",
        crate::cli::BenchTransport::Ws => "ws",
    }
}

async fn delivery_line(
    name: &str,
    args: &crate::cli::BenchDeliveryArgs,
    channel_each: bool,
) -> anyhow::Result<String> {
    let report = delivery::run(&DeliveryPlan {
        target: target(&args.target)?,
        subscribers: args.subscribers,
        channel_each,
        messages: args.messages,
        rate: args.rate,
        size: args.size,
        connect_concurrency: args.concurrency.max(1),
        quiet_limit: Duration::from_secs(10),
        token: args.token.clone(),
        publish_address: args.publish_server.as_deref().map(loopback).transpose()?,
        also_subscribe_address: args.also_server.as_deref().map(loopback).transpose()?,
        transport: args.transport.into(),
    })
    .await
    .with_context(|| format!("the {name} scenario"))?;
    Ok(format!(
        "{name} target={} transport={} subscribers={} messages={} rate={} size={}: deliveries={} expected={} deliveries_per_s={:.0} subscribe_s={:.2} {} {}",
        kind(&args.target),
        transport(args.transport),
        args.subscribers,
        args.messages,
        args.rate.map_or("max".to_string(), |rate| rate.to_string()),
        args.size,
        report.deliveries,
        report.expected,
        report.rate(),
        report.subscribe_time.as_secs_f64(),
        latency_fields(&report.latencies),
        completeness_fields(&report.completeness),
    ))
}

fn latency_fields(latencies: &Latencies) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2}",
        ms(latencies.at(0.5)),
        ms(latencies.at(0.99)),
        ms(latencies.at(0.999)),
        ms(latencies.max())
    )
}

fn completeness_fields(completeness: &Completeness) -> String {
    format!(
        "missing={} duplicated={} out_of_order={}",
        completeness.missing, completeness.duplicated, completeness.out_of_order
    )
}

fn kind(target: &BenchTarget) -> &'static str {
    match target.target {
        TargetKind::Comet => "comet",
        TargetKind::Nchan => "nchan",
    }
}

fn target(target: &BenchTarget) -> anyhow::Result<Target> {
    Ok(Target {
        kind: match target.target {
            TargetKind::Comet => Kind::Comet,
            TargetKind::Nchan => Kind::Nchan,
        },
        address: loopback(&target.server)?,
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
