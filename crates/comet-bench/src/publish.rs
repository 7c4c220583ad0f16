//! The `publish` scenario: K concurrent publishers, each on its own
//! keep-alive connection, publishing as fast as acknowledgements come back
//! for a fixed time, one message per request or batches of N (`POST /pub`),
//! with or without an idempotency key per message. Figures: acknowledged
//! messages per second and acknowledgement latency (per request).

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
    /// Messages per request: 1 publishes to `{path_prefix}{channel}`, more
    /// sends batches to `POST /pub` (Comet only).
    pub batch: usize,
    /// Every message with an idempotency key of its own (never repeated),
    /// for measuring what keys cost.
    pub idempotency_keys: bool,
}

/// What happened.
pub struct PublishReport {
    /// Acknowledged messages (of 2xx answers).
    pub acknowledged: u64,
    /// Refused or failed requests.
    pub failed: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Acknowledgement latencies.
    pub latencies: Latencies,
}

impl PublishReport {
    /// Acknowledged messages per second.
    pub fn rate(&self) -> f64 {
        self.acknowledged as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs the scenario.
pub async fn run(plan: &PublishPlan) -> Result<PublishReport, HttpError> {
    let started = Instant::now();
    let deadline = started + plan.duration;
    // Keys of this run: never those of an earlier run on the same server.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
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
        let data = "x".repeat(plan.size);
        let batch = plan.batch.max(1);
        let keys = plan.idempotency_keys;
        let batch_channel = path.trim_start_matches(&prefix).to_string();
        if batch > 1 {
            path = "/pub".to_string();
        }
        let mut body = data.clone().into_bytes();
        let mut key = String::new();
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
                let mut headers: Vec<(&str, &str)> = authorization
                    .iter()
                    .map(|value| ("authorization", value.as_str()))
                    .collect();
                if batch > 1 {
                    body = batch_body(
                        &batch_channel,
                        &data,
                        batch,
                        keys.then_some((run, publisher, sent_count)),
                    );
                    headers.push(("content-type", "application/json"));
                } else if keys {
                    key.clear();
                    let _ = write!(key, "bench-{run}-{publisher}-{sent_count}");
                    headers.push(("idempotency-key", key.as_str()));
                }
                let sent = Instant::now();
                match connection
                    .request_with("POST", &path, &headers, &body)
                    .await
                {
                    Ok(answer) if (200..300).contains(&answer.status) => {
                        latencies.record(sent.elapsed());
                        acknowledged += batch as u64;
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

/// A batch body of `count` messages of `data` to `channel`, each with a key
/// of its own when `keys` names the run, publisher and request.
fn batch_body(
    channel: &str,
    data: &str,
    count: usize,
    keys: Option<(u128, usize, u64)>,
) -> Vec<u8> {
    let mut body = String::with_capacity(16 + count * (data.len() + channel.len() + 80));
    body.push_str("{\"messages\":[");
    for i in 0..count {
        if i > 0 {
            body.push(',');
        }
        let _ = write!(body, "{{\"channel\":\"{channel}\",\"data\":\"{data}\"");
        if let Some((run, publisher, request)) = keys {
            let _ = write!(
                body,
                ",\"idempotency_key\":\"bench-{run}-{publisher}-{request}-{i}\""
            );
        }
        body.push('}');
    }
    body.push_str("]}");
    body.into_bytes()
}
