//! The delivery scenarios: `fanout` (N subscribers on one channel) and
//! `channels` (N subscribers, each on its own channel). Subscribers read SSE
//! on one thread; a publisher publishes `messages` messages to every
//! channel, as fast as acknowledgements allow or at a fixed rate. Figures:
//! deliveries per second (from the first publish to the last delivery,
//! published on the subscribers' server or on another node of a cluster),
//! publish→receive latency, and completeness (missing, duplicated, out of
//! order), per subscriber.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::Latencies;
use crate::http::{Connection, HttpError};
use crate::payload;
use crate::subscriber::{Subscriber, Transport};
use crate::target::Target;
use crate::tracker::{Completeness, Tracker};

/// What to run.
#[derive(Clone, Debug)]
pub struct DeliveryPlan {
    /// The server.
    pub target: Target,
    /// Subscribers.
    pub subscribers: usize,
    /// One channel for all (`fanout`), or one each (`channels`).
    pub channel_each: bool,
    /// Messages per channel.
    pub messages: u64,
    /// Messages per second per channel; `None`: as fast as acknowledged.
    pub rate: Option<f64>,
    /// Message size in bytes.
    pub size: usize,
    /// Connections opened at once while subscribing.
    pub connect_concurrency: usize,
    /// Give up waiting for deliveries after this long without any.
    pub quiet_limit: Duration,
    /// A token (an API key or a JWT) to subscribe with (the `token` query
    /// parameter) and publish with (`Authorization: Bearer`).
    pub token: Option<String>,
    /// Publish to this server instead of the subscribers' (another node
    /// of a cluster: latency across nodes).
    pub publish_address: Option<std::net::SocketAddr>,
    /// Every other subscriber subscribes here instead (the second node of
    /// a cluster: subscribers split over two nodes).
    pub also_subscribe_address: Option<std::net::SocketAddr>,
    /// How subscribers connect.
    pub transport: Transport,
}

/// What happened.
#[derive(Debug)]
pub struct DeliveryReport {
    /// Deliveries made.
    pub deliveries: u64,
    /// Deliveries expected.
    pub expected: u64,
    /// First publish to last delivery.
    pub elapsed: Duration,
    /// Time to open every subscription.
    pub subscribe_time: Duration,
    /// Publish→receive latency.
    pub latencies: Latencies,
    /// Completeness.
    pub completeness: Completeness,
}

impl DeliveryReport {
    /// Deliveries per second.
    pub fn rate(&self) -> f64 {
        self.deliveries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Shared {
    latencies: Latencies,
    deliveries: u64,
    last_delivery: Instant,
    complete_subscribers: usize,
}

/// Runs the scenario. Call it inside a `tokio::task::LocalSet`.
pub async fn run(plan: &DeliveryPlan) -> Result<DeliveryReport, HttpError> {
    let channel_name = |index: usize| {
        if plan.channel_each {
            format!("bench-{index}")
        } else {
            "bench".to_string()
        }
    };
    // Subscribe everyone first, a batch at a time.
    let started = Instant::now();
    let addresses: Vec<_> = std::iter::once(plan.target.address)
        .chain(plan.also_subscribe_address)
        .collect();
    let readers = Subscriber::open_many(
        &plan.target,
        plan.transport,
        &addresses,
        plan.subscribers,
        plan.connect_concurrency,
        |i| {
            let path = plan.target.subscribe_path(&channel_name(i), plan.transport);
            match &plan.token {
                Some(token) => format!("{path}?token={}", query_escaped(token)),
                None => path,
            }
        },
    )
    .await?;
    let subscribe_time = started.elapsed();

    let shared = Rc::new(RefCell::new(Shared {
        latencies: Latencies::default(),
        deliveries: 0,
        last_delivery: Instant::now(),
        complete_subscribers: 0,
    }));
    let all_done = Rc::new(Notify::new());
    let trackers: Rc<RefCell<Vec<Tracker>>> = Rc::new(RefCell::new(
        (0..plan.subscribers).map(|_| Tracker::default()).collect(),
    ));
    let messages = plan.messages;
    let total = plan.subscribers;
    for (i, mut reader) in readers.into_iter().enumerate() {
        let shared = shared.clone();
        let trackers = trackers.clone();
        let all_done = all_done.clone();
        tokio::task::spawn_local(async move {
            loop {
                let mut finished = false;
                // The events of one read arrived together: one time stamp.
                let mut arrived = None;
                let alive = reader
                    .read(|data| {
                        let (received, at) =
                            *arrived.get_or_insert_with(|| (payload::now_micros(), Instant::now()));
                        let Some((n, latency)) = payload::decode_received(data, received) else {
                            return;
                        };
                        let mut trackers = trackers.borrow_mut();
                        let tracker = &mut trackers[i];
                        let was_complete = tracker.complete(messages);
                        tracker.record(n);
                        let mut shared = shared.borrow_mut();
                        shared.latencies.record(latency);
                        shared.deliveries += 1;
                        shared.last_delivery = at;
                        if !was_complete && tracker.complete(messages) {
                            shared.complete_subscribers += 1;
                            finished = shared.complete_subscribers == total;
                        }
                    })
                    .await;
                if finished {
                    all_done.notify_one();
                }
                if !matches!(alive, Ok(true)) {
                    return;
                }
            }
        });
    }

    // Publish.
    let publish_started = Instant::now();
    let channels: Vec<String> = if plan.channel_each {
        (0..plan.subscribers).map(channel_name).collect()
    } else {
        vec![channel_name(0)]
    };
    let publisher = {
        let plan = plan.clone();
        tokio::task::spawn_local(async move {
            let address = plan.publish_address.unwrap_or(plan.target.address);
            let mut connection = Connection::open(address).await?;
            let authorization = plan.token.as_ref().map(|token| format!("Bearer {token}"));
            let headers: Vec<(&str, &str)> = authorization
                .iter()
                .map(|value| ("authorization", value.as_str()))
                .collect();
            let interval = plan.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
            let mut next = Instant::now();
            for n in 0..plan.messages {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += interval;
                }
                for channel in &channels {
                    let body = payload::encode(n, plan.size);
                    let answer = connection
                        .request_with("POST", &plan.target.publish_path(channel), &headers, &body)
                        .await?;
                    if !(200..300).contains(&answer.status) {
                        return Err(HttpError::Malformed(format!(
                            "publish answered {}",
                            answer.status
                        )));
                    }
                }
            }
            Ok::<(), HttpError>(())
        })
    };

    // Wait for every subscriber to have everything, or for silence.
    let done = all_done.notified();
    tokio::pin!(done);
    loop {
        let quiet = tokio::time::sleep(plan.quiet_limit);
        tokio::select! {
            () = &mut done => break,
            () = quiet => {
                let last = shared.borrow().last_delivery;
                if last.elapsed() >= plan.quiet_limit {
                    break;
                }
            }
        }
    }
    publisher
        .await
        .map_err(|error| HttpError::Malformed(format!("the publisher failed: {error}")))??;

    let shared = shared.borrow();
    let completeness = Completeness::of(&trackers.borrow(), messages);
    let mut latencies = Latencies::default();
    latencies.merge(&shared.latencies);
    Ok(DeliveryReport {
        deliveries: shared.deliveries,
        expected: messages * plan.subscribers as u64,
        elapsed: shared
            .last_delivery
            .saturating_duration_since(publish_started),
        subscribe_time,
        latencies,
        completeness,
    })
}

/// `text` with every byte but RFC 3986's unreserved characters
/// percent-encoded, for a query parameter's value.
fn query_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::query_escaped;

    #[test]
    fn query_escaped_keeps_unreserved_and_encodes_the_rest() {
        assert_eq!(query_escaped("a.B-c_~9"), "a.B-c_~9");
        assert_eq!(query_escaped("k+y/=é"), "k%2By%2F%3D%C3%A9");
    }
}
