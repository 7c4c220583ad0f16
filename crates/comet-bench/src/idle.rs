//! The `idle` scenario: N SSE connections held open. Figures: time to open
//! them all, and the server's resident memory per connection (read from
//! `/proc/PID/status` before and after, for the pid given).

use std::time::{Duration, Instant};

use crate::http::HttpError;
use crate::subscriber::{Subscriber, Transport};
use crate::target::Target;

/// What to run.
#[derive(Clone, Debug)]
pub struct IdlePlan {
    /// The server.
    pub target: Target,
    /// Its process (for nginx: the worker).
    pub server_pid: u32,
    /// Connections.
    pub connections: usize,
    /// Connections opened at once.
    pub connect_concurrency: usize,
    /// Channels the connections spread over (1: all on one channel).
    pub channels: usize,
    /// How long to hold them after the last one opened, before measuring.
    pub settle: Duration,
    /// How they connect.
    pub transport: Transport,
}

/// What happened.
#[derive(Debug)]
pub struct IdleReport {
    /// Connections held.
    pub connections: usize,
    /// Time to open them all.
    pub open_time: Duration,
    /// Server resident memory before, in bytes.
    pub before: u64,
    /// Server resident memory with every connection open, in bytes.
    pub after: u64,
}

impl IdleReport {
    /// Bytes of server memory per connection.
    pub fn per_connection(&self) -> f64 {
        self.after.saturating_sub(self.before) as f64 / self.connections.max(1) as f64
    }
}

/// Resident memory of `pid`, in bytes.
pub fn resident_bytes(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| std::io::Error::other("no VmRSS"))
}

/// Runs the scenario.
pub async fn run(plan: &IdlePlan) -> Result<IdleReport, HttpError> {
    let before = resident_bytes(plan.server_pid)?;
    let started = Instant::now();
    let readers = Subscriber::open_many(
        &plan.target,
        plan.transport,
        &[plan.target.address],
        plan.connections,
        plan.connect_concurrency,
        |i| {
            plan.target.subscribe_path(
                &format!("idle-{}", i % plan.channels.max(1)),
                plan.transport,
            )
        },
    )
    .await?;
    let open_time = started.elapsed();
    tokio::time::sleep(plan.settle).await;
    let after = resident_bytes(plan.server_pid)?;
    drop(readers);
    Ok(IdleReport {
        connections: plan.connections,
        open_time,
        before,
        after,
    })
}
