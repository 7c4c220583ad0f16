//! Fan-out at scale: 1,000 concurrent SSE subscribers, connecting all at
//! once, each receive 1,000 messages exactly once and in order. A
//! subscriber whose connection fails makes the test say what the server
//! saw (its connection counters), so a failure is never a mystery.

use std::time::Instant;

use comet_testkit::{SseStream, TestServer, client, publish, within};
use tokio::sync::mpsc;

const SUBSCRIBERS: usize = 1_000;
const MESSAGES: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sse_subscribers_each_receive_a_thousand_messages_in_order() {
    let server = TestServer::builder()
        .connections(SUBSCRIBERS + 100)
        // The test's own clients, a thousand at once in a debug build,
        // may be slow to send their request heads; that is not what this
        // test checks (the idle timeout has tests of its own).
        .config(|c| c.header_read_timeout = std::time::Duration::from_secs(60))
        .start();
    let (ready, mut connected) = mpsc::channel::<Result<(), String>>(SUBSCRIBERS);
    let mut subscribers = Vec::with_capacity(SUBSCRIBERS);
    for index in 0..SUBSCRIBERS {
        let url = server.url("/sse/fanout");
        let ready = ready.clone();
        subscribers.push(tokio::spawn(async move {
            // One client per subscriber: its own connection, as browsers have.
            let response = match client().get(url).send().await {
                Ok(response) => response,
                Err(error) => {
                    let _ = ready
                        .send(Err(format!("subscriber {index}: {error:?}")))
                        .await;
                    return None;
                }
            };
            let mut stream = SseStream::new(response);
            stream.until_raw(b"\n\n").await;
            let _ = ready.send(Ok(())).await;
            let mut datas = Vec::with_capacity(MESSAGES);
            for _ in 0..MESSAGES {
                let event = stream.next_event().await.expect("the stream stays open");
                datas.push(event.data);
            }
            Some(datas)
        }));
    }
    drop(ready);
    let http = client();
    for _ in 0..SUBSCRIBERS {
        let outcome = within("all subscribers to connect", connected.recv())
            .await
            .expect("every subscriber reports");
        if let Err(failure) = outcome {
            panic!(
                "{failure}\nwhat the server counted:\n{}",
                connection_counters(&http, &server.base()).await
            );
        }
    }
    let started = Instant::now();
    for i in 0..MESSAGES {
        publish(&http, &server.base(), "fanout", &i.to_string()).await;
    }
    let expected: Vec<String> = (0..MESSAGES).map(|i| i.to_string()).collect();
    for (index, subscriber) in subscribers.into_iter().enumerate() {
        let datas = within("a subscriber's messages", subscriber)
            .await
            .unwrap()
            .expect("connected");
        assert_eq!(datas.len(), MESSAGES, "subscriber {index}: count");
        assert!(
            datas == expected,
            "subscriber {index}: exactly once, in order"
        );
    }
    eprintln!(
        "{} deliveries in {:.2?}",
        SUBSCRIBERS * MESSAGES,
        started.elapsed()
    );
}

/// The server's connection counters (refusals, and connections closed with
/// no request answered, by reason), or why they could not be read.
async fn connection_counters(http: &reqwest::Client, base: &str) -> String {
    let mut last_error = String::new();
    for _ in 0..3 {
        match http.get(format!("{base}/metrics")).send().await {
            Ok(response) => {
                let text = response.text().await.unwrap_or_default();
                return text
                    .lines()
                    .filter(|line| line.starts_with("comet_connection"))
                    .collect::<Vec<_>>()
                    .join("\n");
            }
            Err(error) => last_error = error.to_string(),
        }
    }
    format!("(the metrics could not be read: {last_error})")
}
