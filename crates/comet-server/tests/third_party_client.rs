//! A real third-party SSE client, the npm `eventsource` package (installed
//! by the test script), reads Comet's stream, reconnects by itself when the
//! server restarts, and resumes exactly with `Last-Event-ID`.

use std::time::Duration;

use comet_testkit::node::EventSourceClient;
use comet_testkit::{TestServer, client, publish, publish_event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_npm_eventsource_client_receives_reconnects_and_resumes_exactly() {
    let mut server = TestServer::builder()
        .config(|c| c.sse_retry = Duration::from_millis(100))
        .start();
    let http = client();
    let mut node = EventSourceClient::start(&server.url("/sse/news"), 8);
    node.opened().await;

    let mut ids = Vec::new();
    ids.push(publish(&http, &server.base(), "news", "first\nsecond line").await);
    ids.push(publish_event(&http, &server.base(), "news", Some("update"), "typed").await);
    ids.push(publish(&http, &server.base(), "news", "").await);
    ids.push(publish(&http, &server.base(), "news", "cr\r\ncrlf").await);
    let mut events = Vec::new();
    for _ in 0..4 {
        events.push(node.next_event().await);
    }

    // The server goes away and comes back; the client reconnects on its own
    // with Last-Event-ID and gets exactly what it missed meanwhile.
    server.restart();
    // A new HTTP client: the old one's kept-alive connection went with the
    // old server (a publish on it could fail once written).
    let http = client();
    for i in 0..4 {
        ids.push(publish(&http, &server.base(), "news", &format!("after restart {i}")).await);
    }
    node.opened().await;
    for _ in 0..4 {
        events.push(node.next_event().await);
    }

    let received: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["data"].as_str().unwrap(),
                e["lastEventId"].as_str().unwrap(),
            )
        })
        .collect();
    let expected = vec![
        ("message", "first\nsecond line", ids[0].as_str()),
        ("update", "typed", ids[1].as_str()),
        ("message", "", ids[2].as_str()),
        ("message", "cr\ncrlf", ids[3].as_str()),
        ("message", "after restart 0", ids[4].as_str()),
        ("message", "after restart 1", ids[5].as_str()),
        ("message", "after restart 2", ids[6].as_str()),
        ("message", "after restart 3", ids[7].as_str()),
    ];
    assert_eq!(received, expected);
    assert!(node.finished().await, "the client exits after its 8 events");
}
