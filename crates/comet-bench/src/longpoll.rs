//! The `longpoll` scenario: N clients long-polling one channel in a loop
//! (each re-polls as soon as it has an answer) while messages are published
//! at a fixed rate. Figures: publish→receive latency, deliveries, polls, and
//! completeness per client.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::Latencies;
use crate::http::{Connection, HttpError};
use crate::payload;
use crate::target::{Kind, PollCursor, Target};
use crate::tracker::{Completeness, Tracker};

/// What to run.
#[derive(Clone, Debug)]
pub struct LongPollPlan {
    /// The server.
    pub target: Target,
    /// Clients.
    pub clients: usize,
    /// Messages per second.
    pub rate: f64,
    /// How long to publish.
    pub duration: Duration,
    /// Message size.
    pub size: usize,
}

/// What happened.
#[derive(Debug)]
pub struct LongPollReport {
    /// Messages published.
    pub published: u64,
    /// Deliveries.
    pub deliveries: u64,
    /// Polls answered.
    pub polls: u64,
    /// Publish→receive latency.
    pub latencies: Latencies,
    /// Completeness.
    pub completeness: Completeness,
}

struct Shared {
    latencies: Latencies,
    deliveries: u64,
    polls: u64,
}

/// The messages of one poll answer, as payloads.
fn payloads(kind: Kind, body: &[u8]) -> Vec<Vec<u8>> {
    match kind {
        Kind::Nchan => vec![body.to_vec()],
        Kind::Comet => {
            let Ok(answer) = serde_json::from_slice::<serde_json::Value>(body) else {
                return Vec::new();
            };
            answer["messages"]
                .as_array()
                .map(|messages| {
                    messages
                        .iter()
                        .filter_map(|m| m["data"].as_str().map(|d| d.as_bytes().to_vec()))
                        .collect()
                })
                .unwrap_or_default()
        }
    }
}

async fn poll_once(
    connection: &mut Connection,
    target: &Target,
    cursor: &PollCursor,
) -> Result<(Vec<Vec<u8>>, PollCursor), HttpError> {
    match target.kind {
        Kind::Comet => {
            let path = match cursor {
                PollCursor::Comet(cursor) => {
                    format!("/poll/bench?wait=30&since={}", encode(cursor))
                }
                _ => "/poll/bench?wait=30".to_string(),
            };
            let answer = connection.request("GET", &path, b"").await?;
            let next = serde_json::from_slice::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|v| v["cursor"].as_str().map(str::to_string))
                .map(PollCursor::Comet)
                .unwrap_or_else(|| cursor.clone());
            Ok((payloads(Kind::Comet, &answer.body), next))
        }
        Kind::Nchan => {
            let headers: Vec<(&str, &str)> = match cursor {
                PollCursor::Nchan { modified, etag } => {
                    vec![
                        ("if-modified-since", modified.as_str()),
                        ("if-none-match", etag.as_str()),
                    ]
                }
                _ => Vec::new(),
            };
            let answer = connection
                .request_with("GET", "/sub/bench", &headers, b"")
                .await?;
            if answer.status != 200 {
                // 304 or 408: nothing new; poll again from the same point.
                return Ok((Vec::new(), cursor.clone()));
            }
            let next = PollCursor::Nchan {
                modified: answer.header("last-modified").unwrap_or("").to_string(),
                etag: answer.header("etag").unwrap_or("").to_string(),
            };
            Ok((payloads(Kind::Nchan, &answer.body), next))
        }
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs the scenario. Call it inside a `tokio::task::LocalSet`.
pub async fn run(plan: &LongPollPlan) -> Result<LongPollReport, HttpError> {
    let shared = Rc::new(RefCell::new(Shared {
        latencies: Latencies::default(),
        deliveries: 0,
        polls: 0,
    }));
    let trackers = Rc::new(RefCell::new(
        (0..plan.clients)
            .map(|_| Tracker::default())
            .collect::<Vec<_>>(),
    ));
    let stop = Instant::now() + plan.duration + Duration::from_secs(3);
    // Every client holds a first poll before publishing starts.
    let mut connections = Vec::with_capacity(plan.clients);
    for _ in 0..plan.clients {
        connections.push(Connection::open(plan.target.address).await?);
    }
    let mut clients = Vec::new();
    for (i, mut connection) in connections.into_iter().enumerate() {
        let shared = shared.clone();
        let trackers = trackers.clone();
        let target = plan.target.clone();
        clients.push(tokio::task::spawn_local(async move {
            let mut cursor = PollCursor::Start;
            while Instant::now() < stop {
                let polled = tokio::time::timeout_at(
                    stop.into(),
                    poll_once(&mut connection, &target, &cursor),
                )
                .await;
                let Ok(Ok((messages, next))) = polled else {
                    return;
                };
                cursor = next;
                let mut shared = shared.borrow_mut();
                shared.polls += 1;
                for message in messages {
                    if let Some((n, latency)) = payload::decode(&message) {
                        shared.latencies.record(latency);
                        shared.deliveries += 1;
                        trackers.borrow_mut()[i].record(n);
                    }
                }
            }
        }));
    }
    // Let the first polls reach the server.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut publisher = Connection::open(plan.target.address).await?;
    let interval = Duration::from_secs_f64(1.0 / plan.rate);
    let started = Instant::now();
    let mut next = started;
    let mut published = 0u64;
    while started.elapsed() < plan.duration {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        let answer = publisher
            .request(
                "POST",
                &plan.target.publish_path("bench"),
                &payload::encode(published, plan.size),
            )
            .await?;
        if !(200..300).contains(&answer.status) {
            return Err(HttpError::Malformed(format!(
                "publish answered {}",
                answer.status
            )));
        }
        published += 1;
    }
    for client in clients {
        let _ = client.await;
    }
    let shared = shared.borrow();
    let mut completeness = Completeness::default();
    for tracker in trackers.borrow().iter() {
        completeness.add(tracker, published);
    }
    let mut latencies = Latencies::default();
    latencies.merge(&shared.latencies);
    Ok(LongPollReport {
        published,
        deliveries: shared.deliveries,
        polls: shared.polls,
        latencies,
        completeness,
    })
}
