//! `Idempotency-Key` on `POST /pub/{channel}` against the real server: a
//! repeat is answered with the original and stores nothing, other content
//! is a conflict, and racing repeats store one message.

use comet_testkit::{SseStream, TestServer, client, raw, within};
use reqwest::StatusCode;
use serde_json::Value;

/// Publishes `data` to `path` (`/pub/…`) with `key`: the status and the
/// JSON answer.
async fn keyed(
    http: &reqwest::Client,
    server: &TestServer,
    path: &str,
    key: &str,
    data: &str,
) -> (StatusCode, Value) {
    let response = within(
        "a keyed publish",
        http.post(server.url(path))
            .header("idempotency-key", key)
            .body(data.to_string())
            .send(),
    )
    .await
    .expect("publish request");
    let status = response.status();
    (status, response.json().await.expect("a JSON answer"))
}

async fn retained(http: &reqwest::Client, server: &TestServer, channel: &str) -> Vec<String> {
    comet_testkit::retained(http, &server.base(), channel).await
}

/// The original answer, `200` and `duplicate: true`, on the direct path
/// (`/pub/news`) and through the router (`/pub/n%65ws`, decoded to the
/// same channel) alike; nothing stored twice.
#[tokio::test]
async fn a_repeat_gets_the_original_answer_and_stores_nothing() {
    let server = TestServer::start();
    let http = client();
    let _listener = http.get(server.url("/sse/news")).send().await.unwrap();
    let (status, first) = keyed(&http, &server, "/pub/news", "order-1", "hello").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(first["subscribers"], 1);
    assert!(first.get("duplicate").is_none(), "{first}");
    for path in ["/pub/news", "/pub/n%65ws"] {
        let (status, again) = keyed(&http, &server, path, "order-1", "hello").await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(again["id"], first["id"], "{path}");
        assert_eq!(again["channel"], "news");
        assert_eq!(again["subscribers"], 1, "the original's count");
        assert_eq!(again["duplicate"], true);
    }
    let (status, other_channel) = keyed(&http, &server, "/pub/sport", "order-1", "hello").await;
    assert_eq!(status, StatusCode::CREATED, "a key belongs to its channel");
    assert_ne!(other_channel["id"], first["id"]);
    assert_eq!(retained(&http, &server, "news").await, ["hello"]);
    let metrics = comet_testkit::metrics(&http, &server.base()).await;
    assert_eq!(
        comet_testkit::metric_value(&metrics, "comet_publish_repeats_total"),
        2
    );
    assert_eq!(
        comet_testkit::metric_value(&metrics, "comet_store_idempotency_keys"),
        2
    );
}

/// A subscriber sees a message published with a key once, however many
/// times it is sent.
#[tokio::test]
async fn subscribers_see_a_repeated_publish_once() {
    let server = TestServer::start();
    let http = client();
    let response = http.get(server.url("/sse/news")).send().await.unwrap();
    let mut events = SseStream::new(response);
    within("the stream to open", events.opening_id()).await;
    for _ in 0..3 {
        keyed(&http, &server, "/pub/news", "k", "once").await;
    }
    comet_testkit::publish(&http, &server.base(), "news", "after").await;
    let received = within("two events", events.events(2)).await;
    let data: Vec<&str> = received.iter().map(|event| event.data.as_str()).collect();
    assert_eq!(data, ["once", "after"]);
}

/// The same key with other data or another event type: 409, nothing stored.
#[tokio::test]
async fn the_same_key_with_other_content_is_a_conflict() {
    let server = TestServer::start();
    let http = client();
    keyed(&http, &server, "/pub/news", "k", "first").await;
    let (status, error) = keyed(&http, &server, "/pub/news", "k", "second").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error["error"], "idempotency_conflict");
    assert!(
        error.get("index").is_none(),
        "a single publish has no index: {error}"
    );
    let (status, error) = keyed(&http, &server, "/pub/news?event=price", "k", "first").await;
    assert_eq!(status, StatusCode::CONFLICT, "another event type");
    assert_eq!(error["error"], "idempotency_conflict");
    assert_eq!(retained(&http, &server, "news").await, ["first"]);
}

/// Keys outside the contract are refused before anything is stored, on
/// the direct path and through the router.
#[tokio::test]
async fn invalid_keys_are_refused() {
    let server = TestServer::start();
    let long = "k".repeat(256);
    let cases = [
        ("idempotency-key: a b\r\n", "/pub/news"),
        (&format!("idempotency-key: {long}\r\n") as &str, "/pub/news"),
        ("idempotency-key: é\r\n", "/pub/news"),
        ("idempotency-key: a\r\nidempotency-key: b\r\n", "/pub/news"),
        ("idempotency-key: a b\r\n", "/pub/n%65ws"),
    ];
    for (field, path) in cases {
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\n{field}content-length: 1\r\nconnection: close\r\n\r\nx"
        );
        let answer = raw::exchange(server.address(), request.as_bytes()).await;
        assert_eq!(answer.status, 400, "{field:?} on {path}");
        assert_eq!(answer.error_code(), "invalid_idempotency_key", "{field:?}");
    }
    let http = client();
    assert!(retained(&http, &server, "news").await.is_empty());
    let (status, _) = keyed(&http, &server, "/pub/news", &"~".repeat(255), "x").await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "255 printable bytes is a valid key"
    );
}

/// The same key sent at once from several connections stores one message;
/// every answer names it.
#[tokio::test]
async fn racing_repeats_store_one_message() {
    let server = TestServer::start();
    for round in 0..10 {
        let key = format!("race-{round}");
        let mut tasks = Vec::new();
        for _ in 0..4 {
            // A client each: separate connections.
            let http = client();
            let url = server.url("/pub/race");
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let response = http
                    .post(url)
                    .header("idempotency-key", key)
                    .body("same")
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let body: Value = response.json().await.unwrap();
                (status, body["id"].as_str().unwrap().to_string())
            }));
        }
        let mut created = 0;
        let mut ids = Vec::new();
        for task in tasks {
            let (status, id) = task.await.unwrap();
            if status == StatusCode::CREATED {
                created += 1;
            }
            ids.push(id);
        }
        assert_eq!(created, 1, "round {round}: one publish stores");
        ids.dedup();
        assert_eq!(
            ids.len(),
            1,
            "round {round}: every answer names the one message"
        );
    }
    let http = client();
    assert_eq!(retained(&http, &server, "race").await.len(), 10);
}
