//! The `publish` scenario: K concurrent publishers, each on its own
//! keep-alive connection, publishing as fast as acknowledgements come back
//! for a fixed time. Figures: acknowledged publishes per second and
//! acknowledgement latency.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::Latencies;
use crate::http::{Connection, HttpError};

/// What to run.
#[derive(Clone, Debug)]
pub struct PublishPlan {
    /// The server.
    pub address: SocketAddr,
    /// Publish path prefix: `/pub/` for Comet and for Nchan's usual setup.
    pub path_prefix: String,
    /// Concurrent publishers.
    pub publishers: usize,
    /// How long to publish.
    pub duration: Duration,
    /// Message size in bytes.
    pub size: usize,
    /// Channels to spread publishes over (publisher `i` uses channel
    /// `i % channels`).
    pub channels: usize,
    /// Every publish to a channel name never used before instead
    /// (`fresh-{publisher}-{n}`), as an application with a channel per
    /// user or per session does: what that costs the server over time.
    pub fresh_channels: bool,
    /// A token to publish with (`Authorization: Bearer`), for measuring what
    /// authorization costs.
    pub token: Option<String>,
}

/// What happened.
pub struct PublishReport {
    /// Acknowledged publishes (2xx).
    pub acknowledged: u64,
    /// Refused or failed publishes.
    pub failed: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Acknowledgement latencies.
    pub latencies: Latencies,
}

impl PublishReport {
    /// Acknowledged publishes per second.
    pub fn rate(&self) -> f64 {
        self.acknowledged as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs the scenario.
pub async fn run(plan: &PublishPlan) -> Result<PublishReport, HttpError> {
    let started = Instant::now();
    let deadline = started + plan.duration;
    let mut tasks = Vec::with_capacity(plan.publishers);
    for publisher in 0..plan.publishers {
        let mut connection = Connection::open(plan.address).await?;
        let mut path = format!(
            "{}bench-{}",
            plan.path_prefix,
            publisher % plan.channels.max(1)
        );
        let prefix = plan.path_prefix.clone();
        let fresh = plan.fresh_channels;
        let authorization = plan.token.as_ref().map(|token| format!("Bearer {token}"));
        let body = vec![b'x'; plan.size];
        tasks.push(tokio::spawn(async move {
            let mut sent_count = 0u64;
            let mut latencies = Latencies::default();
            let mut acknowledged = 0u64;
            let mut failed = 0u64;
            while Instant::now() < deadline {
                if fresh {
                    path.clear();
                    let _ = write!(path, "{prefix}fresh-{publisher}-{sent_count}");
                }
                sent_count += 1;
                let sent = Instant::now();
                let headers: Vec<(&str, &str)> = authorization
                    .iter()
                    .map(|value| ("authorization", value.as_str()))
                    .collect();
                match connection
                    .request_with("POST", &path, &headers, &body)
                    .await
                {
                    Ok(answer) if (200..300).contains(&answer.status) => {
                        latencies.record(sent.elapsed());
                        acknowledged += 1;
                    }
                    Ok(_) => failed += 1,
                    Err(error) => return Err(error),
                }
            }
            Ok((latencies, acknowledged, failed))
        }));
    }
    let mut report = PublishReport {
        acknowledged: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: Latencies::default(),
    };
    for task in tasks {
        let (latencies, acknowledged, failed) = task
            .await
            .map_err(|error| HttpError::Malformed(format!("a publisher failed: {error}")))??;
        report.latencies.merge(&latencies);
        report.acknowledged += acknowledged;
        report.failed += failed;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
