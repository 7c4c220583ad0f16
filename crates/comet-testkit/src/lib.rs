//! What Comet's black-box tests share.
//!
//! - [`TestServer`]: the real server (router, connection handling and all)
//!   on `127.0.0.1:0`, running on its own runtime thread, so a test talks to
//!   it over real HTTP exactly as a client would.
//! - [`ServerProcess`]: the real `comet` binary as a child process, for what
//!   only a process shows: signals, exit codes, memory.
//! - [`SseStream`], [`NdjsonStream`], [`raw`]: readers that know nothing of
//!   Comet's code, so the server's bytes are checked independently.
//! - [`AnswerLosingProxy`]: a TCP proxy that loses the server's answers,
//!   for publishers that must retry without publishing twice.
//! - [`RedisServer`]: a real `redis-server` on a free loopback port.
//!
//! Every wait is bounded by [`TIMEOUT`]: a broken server fails a test, it
//! never hangs it.

pub mod node;
mod process;
mod proxy;
pub mod raw;
mod readers;
mod redis;
mod server;
pub mod ws;

use std::time::Duration;

pub use process::ServerProcess;
pub use proxy::{AnswerLosingProxy, Losing};
pub use readers::{NdjsonStream, SseEvent, SseStream};
pub use redis::RedisServer;
pub use server::{TestServer, TestServerBuilder, TestStore};

/// The longest any single wait in a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test with `what` if it takes longer than
/// [`TIMEOUT`].
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(TIMEOUT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {TIMEOUT:?} waiting for {what}"),
    }
}

/// An HTTP client for tests: no proxy, no pooling surprises.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

/// Publishes `data` to `channel` on the server at `base` and returns the id.
pub async fn publish(client: &reqwest::Client, base: &str, channel: &str, data: &str) -> String {
    publish_event(client, base, channel, None, data).await
}

/// Publishes `"0"`, `"1"`, … up to `count` messages to `channel` on the
/// server at `base`, one after the other, and returns their ids in order.
pub async fn publish_numbered(
    client: &reqwest::Client,
    base: &str,
    channel: &str,
    count: usize,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for number in 0..count {
        ids.push(publish(client, base, channel, &number.to_string()).await);
    }
    ids
}

/// Publishes with an event type and returns the id.
pub async fn publish_event(
    client: &reqwest::Client,
    base: &str,
    channel: &str,
    event: Option<&str>,
    data: &str,
) -> String {
    let mut url = format!("{base}/pub/{channel}");
    if let Some(event) = event {
        url.push_str("?event=");
        url.push_str(event);
    }
    let response = within("a publish", client.post(&url).body(data.to_string()).send())
        .await
        .expect("publish request");
    assert_eq!(response.status(), 201, "publish to {url}");
    let body: serde_json::Value = response.json().await.expect("publish answer is JSON");
    body["id"]
        .as_str()
        .expect("publish answer has an id")
        .to_string()
}

/// The data of the messages `channel` retains on the server at `base` (up
/// to one poll answer's worth), oldest first.
pub async fn retained(client: &reqwest::Client, base: &str, channel: &str) -> Vec<String> {
    let url = format!("{base}/poll/{channel}?since=&backlog=1000");
    let answer = get_json(client, &url).await;
    answer["messages"]
        .as_array()
        .expect("a poll answer")
        .iter()
        .map(|message| message["data"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `GET` `url` and parse the answer as JSON (any status).
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    within("a JSON answer", async {
        client
            .get(url)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("a JSON body")
    })
    .await
}

/// A long-poll client: polls `channel` on the server at `base` from
/// `cursor`, on a connection of its own kept alive from poll to poll, until
/// it has `count` messages; returns their data in the order received.
pub async fn long_poll_until(base: &str, channel: &str, cursor: &str, count: usize) -> Vec<String> {
    let http = client();
    let mut cursor = cursor.to_string();
    let mut received = Vec::new();
    while received.len() < count {
        let url = format!("{base}/poll/{channel}?wait=30&since={}", encode(&cursor));
        let answer = get_json(&http, &url).await;
        for message in answer["messages"].as_array().expect("a messages array") {
            received.push(message["data"].as_str().expect("text data").to_string());
        }
        cursor = answer["cursor"].as_str().expect("a cursor").to_string();
    }
    received
}

/// Races long polls against a publisher on the server at `base`:
/// `clients` long-poll clients (see [`long_poll_until`]) start from "now"
/// on `channel`; once all of them wait, `messages` messages ("0", "1", …)
/// are published back to back, so most clients are between polls for most
/// of them, some parked, some caught while re-polling. Asserts that every
/// client received every message once, in order.
pub async fn race_long_polls_against_a_publisher(
    base: &str,
    channel: &str,
    clients: usize,
    messages: usize,
) {
    let http = client();
    let start = get_json(&http, &format!("{base}/poll/{channel}")).await["cursor"]
        .as_str()
        .expect("a cursor")
        .to_string();
    let mut polling = Vec::new();
    for _ in 0..clients {
        let (base, channel, start) = (base.to_string(), channel.to_string(), start.clone());
        polling.push(tokio::spawn(async move {
            long_poll_until(&base, &channel, &start, messages).await
        }));
    }
    wait_for_metric(
        &http,
        base,
        &format!("comet_subscribers{{transport=\"longpoll\"}} {clients}"),
    )
    .await;
    for i in 0..messages {
        publish(&http, base, channel, &i.to_string()).await;
    }
    let expected: Vec<String> = (0..messages).map(|i| i.to_string()).collect();
    for client in polling {
        let received = within("a client's messages", client).await.unwrap();
        assert_eq!(received, expected);
    }
}

/// The server's metrics text.
pub async fn metrics(client: &reqwest::Client, base: &str) -> String {
    within("the metrics", async {
        client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("a text body")
    })
    .await
}

/// The value of the metric line starting with `name ` (no labels, or its
/// labels written out in `name`) in a metrics text.
pub fn metric_value(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in the metrics:\n{text}"))
        .trim()
        .parse()
        .expect("a whole number")
}

/// Waits until the server's metrics contain `line` (for example a
/// subscriber count showing that a long poll is held).
pub async fn wait_for_metric(client: &reqwest::Client, base: &str, line: &str) {
    within(line, async {
        while !metrics(client, base).await.contains(line) {
            // A short pause between looks: a hot loop of requests would
            // take the CPU the server under test needs.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
    .await;
}

/// Percent-encodes a query value (ids are opaque: always encode them).
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
