//! The `longpoll` scenario: N clients long-polling one channel in a loop
//! (each re-polls as soon as it has an answer) while messages are published
//! at a fixed rate. Figures: publish→receive latency, deliveries, polls, and
//! completeness per client.

use std::borrow::Cow;
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

/// A Comet poll answer, as far as the load generator reads it.
#[derive(serde::Deserialize)]
struct CometAnswer<'a> {
    #[serde(borrow)]
    messages: Vec<CometMessage<'a>>,
    #[serde(borrow)]
    cursor: Cow<'a, str>,
}

#[derive(serde::Deserialize)]
struct CometMessage<'a> {
    #[serde(borrow)]
    data: Cow<'a, str>,
}

/// Polls once; hands every payload of the answer, with the time the answer
/// arrived (microseconds since the Unix epoch), to `on_payload`, and returns
/// where to poll from next. The answer is parsed once, without building a
/// document tree, so that the client's own cost stays small and the same
/// for every server.
async fn poll_once(
    connection: &mut Connection,
    target: &Target,
    cursor: &PollCursor,
    mut on_payload: impl FnMut(&[u8], u64),
) -> Result<PollCursor, HttpError> {
    match target.kind {
        Kind::Comet => {
            let mut path = String::with_capacity(96);
            path.push_str("/poll/bench?wait=30");
            if let PollCursor::Comet(cursor) = cursor {
                path.push_str("&since=");
                percent_encode(cursor, &mut path);
            }
            let answer = connection.request("GET", &path, b"").await?;
            let received = payload::now_micros();
            let Ok(parsed) = serde_json::from_slice::<CometAnswer<'_>>(&answer.body) else {
                return Ok(cursor.clone());
            };
            for message in &parsed.messages {
                on_payload(message.data.as_bytes(), received);
            }
            Ok(PollCursor::Comet(parsed.cursor.into_owned()))
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
            let received = payload::now_micros();
            if answer.status != 200 {
                // 304 or 408: nothing new; poll again from the same point.
                return Ok(cursor.clone());
            }
            on_payload(&answer.body, received);
            Ok(PollCursor::Nchan {
                modified: answer.header("last-modified").unwrap_or("").to_string(),
                etag: answer.header("etag").unwrap_or("").to_string(),
            })
        }
    }
}

/// Appends `text` percent-encoded (everything but unreserved characters).
fn percent_encode(text: &str, out: &mut String) {
    use std::fmt::Write;
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char);
            }
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
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
                let record = |message: &[u8], received: u64| {
                    if let Some((n, latency)) = payload::decode_received(message, received) {
                        let mut shared = shared.borrow_mut();
                        shared.latencies.record(latency);
                        shared.deliveries += 1;
                        trackers.borrow_mut()[i].record(n);
                    }
                };
                let polled = tokio::time::timeout_at(
                    stop.into(),
                    poll_once(&mut connection, &target, &cursor, record),
                )
                .await;
                let Ok(Ok(next)) = polled else {
                    return;
                };
                cursor = next;
                shared.borrow_mut().polls += 1;
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
    let completeness = Completeness::of(&trackers.borrow(), published);
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
