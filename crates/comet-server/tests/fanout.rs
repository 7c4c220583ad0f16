//! Fan-out at scale: 1,000 concurrent SSE subscribers each receive 1,000
//! messages exactly once and in order.

use std::sync::Arc;
use std::time::Instant;

use comet_testkit::{SseStream, TestServer, client, publish, within};
use tokio::sync::Barrier;

const SUBSCRIBERS: usize = 1_000;
const MESSAGES: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sse_subscribers_each_receive_a_thousand_messages_in_order() {
    let server = TestServer::builder().connections(SUBSCRIBERS + 100).start();
    let ready = Arc::new(Barrier::new(SUBSCRIBERS + 1));
    let mut subscribers = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        let url = server.url("/sse/fanout");
        let ready = ready.clone();
        subscribers.push(tokio::spawn(async move {
            // One client per subscriber: its own connection, as browsers have.
            let response = client().get(url).send().await.unwrap();
            let mut stream = SseStream::new(response);
            stream.until_raw(b"\n\n").await;
            ready.wait().await;
            let mut datas = Vec::with_capacity(MESSAGES);
            for _ in 0..MESSAGES {
                let event = stream.next_event().await.expect("the stream stays open");
                datas.push(event.data);
            }
            datas
        }));
    }
    within("all subscribers to connect", ready.wait()).await;
    let started = Instant::now();
    let http = client();
    for i in 0..MESSAGES {
        publish(&http, &server.base(), "fanout", &i.to_string()).await;
    }
    let expected: Vec<String> = (0..MESSAGES).map(|i| i.to_string()).collect();
    for (index, subscriber) in subscribers.into_iter().enumerate() {
        let datas = within("a subscriber's messages", subscriber).await.unwrap();
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
