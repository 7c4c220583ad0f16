//! `GET /stream/{channels}`: HTTP streaming as NDJSON.

use comet_testkit::{
    NdjsonStream, TestServer, client, encode, publish, publish_event, publish_numbered,
};
use serde_json::json;

async fn open(server: &TestServer, path: &str) -> NdjsonStream {
    let response = client().get(server.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    NdjsonStream::new(response)
}

#[tokio::test]
async fn each_message_is_one_json_object_per_line() {
    let server = TestServer::start();
    let http = client();
    let mut stream = open(&server, "/stream/news").await;
    let datas = [
        "plain",
        "two\nlines",
        "cr\rcrlf\r\n",
        "",
        "quote \" backslash \\ tab \t ✓",
    ];
    let mut ids = Vec::new();
    for data in datas {
        ids.push(publish(&http, &server.base(), "news", data).await);
    }
    let typed = publish_event(&http, &server.base(), "news", Some("kind"), "t").await;
    for (data, id) in datas.iter().zip(&ids) {
        let line = stream.next_item().await.unwrap();
        assert_eq!(
            line,
            json!({"id": id, "channel": "news", "event": "message", "data": data}),
            "JSON transports keep the data exactly"
        );
    }
    let line = stream.next_item().await.unwrap();
    assert_eq!(
        line,
        json!({"id": typed, "channel": "news", "event": "kind", "data": "t"})
    );
}

#[tokio::test]
async fn heartbeats_are_lines_that_are_not_messages() {
    let server = TestServer::builder()
        .config(|c| c.heartbeat = std::time::Duration::from_millis(30))
        .start();
    let mut stream = open(&server, "/stream/news").await;
    for _ in 0..3 {
        let line = stream.next_value().await.unwrap();
        assert_eq!(line, json!({"heartbeat": true}));
        assert!(line.get("id").is_none());
    }
}

#[tokio::test]
async fn resume_with_since_and_gaps_as_lines() {
    let server = TestServer::builder().keep_messages(3).start();
    let http = client();
    let ids = publish_numbered(&http, &server.base(), "news", 6).await;
    // Within the retained history: no gap.
    let mut exact = open(&server, &format!("/stream/news?since={}", encode(&ids[3]))).await;
    assert_eq!(exact.next_item().await.unwrap()["data"], "4");
    assert_eq!(exact.next_item().await.unwrap()["data"], "5");
    // Before it: a gap line first.
    let mut behind = open(&server, &format!("/stream/news?since={}", encode(&ids[0]))).await;
    assert_eq!(
        behind.next_item().await.unwrap(),
        json!({"gap": {"channel": "news", "reason": "trimmed"}})
    );
    for expected in ["3", "4", "5"] {
        assert_eq!(behind.next_item().await.unwrap()["data"], expected);
    }
}
