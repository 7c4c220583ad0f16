//! Resume is exact on every transport: a subscriber to several channels that
//! disconnects again and again, at arbitrary points, while a publisher keeps
//! publishing, ends up with every message of its channels exactly once and
//! in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use comet_testkit::{NdjsonStream, SseStream, TestServer, client, encode, publish, within};
use serde_json::Value;

const MESSAGES: usize = 450;

/// A small deterministic sequence of "how many to read before hanging up".
struct Dice(u64);

impl Dice {
    fn roll(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        1 + (self.0 >> 33) as usize % 9
    }
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Sse,
    Stream,
    Poll,
    LongPoll,
}

/// Publishes MESSAGES messages round-robin over a, b and c; returns what a
/// subscriber to a and b must receive.
fn start_publisher(
    server: &TestServer,
    done: Arc<AtomicBool>,
) -> (tokio::task::JoinHandle<()>, Vec<String>) {
    let expected: Vec<String> = (0..MESSAGES)
        .filter(|i| i % 3 != 2)
        .map(|i| format!("{}{i}", ["a", "b", "c"][i % 3]))
        .collect();
    let base = server.base();
    let task = tokio::spawn(async move {
        let http = client();
        for i in 0..MESSAGES {
            let channel = ["a", "b", "c"][i % 3];
            publish(&http, &base, channel, &format!("{channel}{i}")).await;
            if i % 16 == 0 {
                tokio::task::yield_now().await;
            }
        }
        done.store(true, Ordering::SeqCst);
    });
    (task, expected)
}

async fn read_with_reconnects(server: &TestServer, transport: Transport, seed: u64) {
    let http = client();
    // The starting cursor: "now", before anything is published.
    let first: Value = comet_testkit::get_json(&http, &server.url("/poll/a,b")).await;
    let mut cursor = first["cursor"].as_str().unwrap().to_string();
    let done = Arc::new(AtomicBool::new(false));
    let (publisher, expected) = start_publisher(server, done.clone());
    let mut dice = Dice(seed);
    let mut received: Vec<String> = Vec::new();
    let mut connections = 0;
    while received.len() < expected.len() {
        connections += 1;
        let quota = dice.roll();
        let mut got = 0;
        match transport {
            Transport::Sse => {
                let response = http
                    .get(server.url("/sse/b,a"))
                    .header("Last-Event-ID", &cursor)
                    .send()
                    .await
                    .unwrap();
                let mut stream = SseStream::new(response);
                while got < quota && received.len() < expected.len() {
                    let event = stream.next_event().await.expect("stream stays open");
                    assert_eq!(event.event, "message", "no gap expected");
                    received.push(event.data);
                    cursor = event.id;
                    got += 1;
                }
            }
            Transport::Stream => {
                let url = server.url(&format!("/stream/a,b?since={}", encode(&cursor)));
                let mut stream = NdjsonStream::new(http.get(url).send().await.unwrap());
                while got < quota && received.len() < expected.len() {
                    let line = stream.next_item().await.expect("stream stays open");
                    assert!(line.get("gap").is_none(), "no gap expected");
                    received.push(line["data"].as_str().unwrap().to_string());
                    cursor = line["id"].as_str().unwrap().to_string();
                    got += 1;
                }
            }
            Transport::Poll | Transport::LongPoll => {
                let wait = if matches!(transport, Transport::LongPoll) {
                    "&wait=10"
                } else {
                    ""
                };
                let url = server.url(&format!("/poll/a,b?since={}{wait}", encode(&cursor)));
                let answer: Value = within("a poll", http.get(url).send())
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert!(answer.get("gaps").is_none(), "no gap expected");
                for message in answer["messages"].as_array().unwrap() {
                    received.push(message["data"].as_str().unwrap().to_string());
                }
                cursor = answer["cursor"].as_str().unwrap().to_string();
                if matches!(transport, Transport::Poll) && !done.load(Ordering::SeqCst) {
                    tokio::task::yield_now().await;
                }
            }
        }
    }
    within("the publisher", publisher).await.unwrap();
    assert_eq!(
        received.len(),
        expected.len(),
        "{transport:?}: nothing duplicated"
    );
    assert_eq!(
        received, expected,
        "{transport:?}: nothing lost, all in order"
    );
    assert!(
        connections > 20,
        "{transport:?}: reconnected often ({connections})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_exactly_across_many_reconnects() {
    read_with_reconnects(&TestServer::start(), Transport::Sse, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_resumes_exactly_across_many_reconnects() {
    read_with_reconnects(&TestServer::start(), Transport::Stream, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_polling_resumes_exactly() {
    read_with_reconnects(&TestServer::start(), Transport::Poll, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_resumes_exactly() {
    read_with_reconnects(&TestServer::start(), Transport::LongPoll, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_works_across_transports() {
    let server = TestServer::start();
    let http = client();
    let mut expected = Vec::new();
    for i in 0..12 {
        let channel = ["a", "b"][i % 2];
        publish(&http, &server.base(), channel, &i.to_string()).await;
        expected.push(i.to_string());
    }
    // Start with a backlog over SSE, continue by polling, then streaming.
    let mut sse = SseStream::new(
        http.get(server.url("/sse/a,b?backlog=100"))
            .send()
            .await
            .unwrap(),
    );
    let first = sse.events(4).await;
    let mut received: Vec<String> = first.iter().map(|e| e.data.clone()).collect();
    let cursor = first[3].id.clone();
    drop(sse);
    let answer: Value = comet_testkit::get_json(
        &http,
        &server.url(&format!("/poll/a,b?since={}", encode(&cursor))),
    )
    .await;
    let polled = answer["messages"].as_array().unwrap();
    for message in polled.iter().take(4) {
        received.push(message["data"].as_str().unwrap().to_string());
    }
    let cursor = polled[3]["id"].as_str().unwrap().to_string();
    let mut stream = NdjsonStream::new(
        http.get(server.url(&format!("/stream/a,b?since={}", encode(&cursor))))
            .send()
            .await
            .unwrap(),
    );
    for _ in 0..4 {
        received.push(
            stream.next_item().await.unwrap()["data"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(received, expected);
}
