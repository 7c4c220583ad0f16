//! `POST /pub` (a batch) against the real server: atomic validation,
//! results in order, limits, keys, and delivery in the batch's order.

use comet_testkit::{NdjsonStream, TestServer, client, within};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn batch(http: &reqwest::Client, server: &TestServer, body: &Value) -> (StatusCode, Value) {
    let response = within(
        "a batch publish",
        http.post(server.url("/pub")).json(body).send(),
    )
    .await
    .expect("batch request");
    let status = response.status();
    (status, response.json().await.expect("a JSON answer"))
}

fn messages(items: Vec<Value>) -> Value {
    json!({ "messages": items })
}

async fn retained(http: &reqwest::Client, server: &TestServer, channel: &str) -> Vec<String> {
    comet_testkit::retained(http, &server.base(), channel).await
}

/// Results come in the request's order with each message's id and
/// subscribers; a string is the data as it is, other JSON values their
/// compact text; a subscriber of several channels gets the batch in order.
#[tokio::test]
async fn a_batch_is_stored_and_delivered_in_its_order() {
    let server = TestServer::start();
    let http = client();
    let response = http.get(server.url("/stream/a,b")).send().await.unwrap();
    let mut stream = NdjsonStream::new(response);
    within("the stream to open", stream.next_value()).await;
    let body = messages(vec![
        json!({"channel": "b", "data": "one"}),
        json!({"channel": "a", "event": "price", "data": {"bid": 1.50, "tags": ["x y"]}}),
        json!({"channel": "b", "data": 12345678901234567890u64}),
        json!({"channel": "c", "data": null}),
    ]);
    let (status, answer) = batch(&http, &server, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let results = answer["results"].as_array().unwrap();
    let channels: Vec<&str> = results
        .iter()
        .map(|r| r["channel"].as_str().unwrap())
        .collect();
    assert_eq!(channels, ["b", "a", "b", "c"]);
    let subscribers: Vec<u64> = results
        .iter()
        .map(|r| r["subscribers"].as_u64().unwrap())
        .collect();
    assert_eq!(subscribers, [1, 1, 1, 0]);
    let mut delivered = Vec::new();
    while delivered.len() < 3 {
        let item = within("batch messages", stream.next_item())
            .await
            .expect("a line");
        delivered.push(item);
    }
    let got: Vec<(&str, &str, &str)> = delivered
        .iter()
        .map(|m| {
            (
                m["channel"].as_str().unwrap(),
                m["event"].as_str().unwrap(),
                m["data"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("b", "message", "one"),
            ("a", "price", r#"{"bid":1.5,"tags":["x y"]}"#),
            ("b", "message", "12345678901234567890"),
        ]
    );
    for (message, result) in delivered.iter().zip(results) {
        assert_eq!(
            message["id"].as_str().unwrap().rsplit_once('/').unwrap().0,
            result["id"].as_str().unwrap().rsplit_once('/').unwrap().0,
            "the stream's cursor positions are the results' ids"
        );
    }
    assert_eq!(retained(&http, &server, "c").await, ["null"]);
}

/// One bad message anywhere: 400 naming it, and nothing of the batch is
/// stored.
#[tokio::test]
async fn an_invalid_message_anywhere_stores_nothing() {
    let server = TestServer::start();
    let http = client();
    let good = json!({"channel": "a", "data": "fine"});
    let cases = [
        (
            json!({"channel": "no spaces", "data": "x"}),
            "invalid_channel",
        ),
        (
            json!({"channel": "a", "event": "comet-gap", "data": "x"}),
            "reserved_event",
        ),
        (json!({"channel": "a"}), "invalid_batch"),
        (
            json!({"channel": "a", "data": "x", "unknown": 1}),
            "invalid_batch",
        ),
        (
            json!({"channel": "a", "data": "x", "idempotency_key": ""}),
            "invalid_idempotency_key",
        ),
        (json!("not an object"), "invalid_batch"),
    ];
    for (bad, code) in cases {
        for position in [0, 2] {
            let mut items = vec![good.clone(), good.clone()];
            items.insert(position, bad.clone());
            let (status, error) = batch(&http, &server, &messages(items)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(error["error"], code, "{bad}: {error}");
            assert_eq!(error["index"], position, "{bad}");
            assert!(error["message"].as_str().unwrap().contains("of the batch"));
        }
    }
    for body in [
        json!({"messages": {}}),
        json!([]),
        json!({"messages": [], "extra": 1}),
    ] {
        let (status, error) = batch(&http, &server, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error["error"], "invalid_batch");
        assert!(error.get("index").is_none());
    }
    assert!(
        retained(&http, &server, "a").await.is_empty(),
        "nothing was stored"
    );
    let (status, answer) = batch(&http, &server, &messages(vec![])).await;
    assert_eq!(
        (status, answer),
        (StatusCode::CREATED, json!({"results": []}))
    );
}

/// Limits: items per batch and the body size (413), each message's data
/// within --max-body (413 naming it), and JSON only (415).
#[tokio::test]
async fn limits_are_answered_413_and_a_batch_must_be_json() {
    let server = TestServer::builder()
        .config(|config| {
            config.max_batch_messages = 3;
            config.max_batch_bytes = 4096;
            config.max_body_bytes = 100;
        })
        .start();
    let http = client();
    let item = json!({"channel": "a", "data": "x"});
    let (status, error) = batch(&http, &server, &messages(vec![item.clone(); 4])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error["error"], "too_many_messages");
    let big = json!({"channel": "a", "data": "y".repeat(101)});
    let (status, error) = batch(&http, &server, &messages(vec![item.clone(), big])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        (error["error"].as_str(), error["index"].as_u64()),
        (Some("payload_too_large"), Some(1))
    );
    let huge = json!({"channel": "a", "data": "z".repeat(5000)});
    let (status, error) = batch(&http, &server, &messages(vec![huge])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error["error"], "payload_too_large");
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = http
            .post(server.url("/pub"))
            .body(messages(vec![item.clone()]).to_string());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], "unsupported_media_type");
    }
    let response = http
        .post(server.url("/pub"))
        .header("content-type", "Application/JSON; charset=utf-8")
        .body(messages(vec![item.clone(), item]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(retained(&http, &server, "a").await, ["x", "x"]);
}

/// Keys in a batch: repeats (of an earlier publish or of an earlier item)
/// are flagged and stored once; a key reused for other content is 409
/// naming the item, and nothing of the batch is stored.
#[tokio::test]
async fn keys_in_a_batch_are_judged_per_message() {
    let server = TestServer::start();
    let http = client();
    let keyed = |channel: &str, data: &str, key: &str| json!({"channel": channel, "data": data, "idempotency_key": key});
    let (_, first) = batch(&http, &server, &messages(vec![keyed("a", "1", "k1")])).await;
    let (status, answer) = batch(
        &http,
        &server,
        &messages(vec![
            keyed("a", "1", "k1"),
            keyed("a", "2", "k2"),
            keyed("a", "2", "k2"),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[0]["id"], first["results"][0]["id"]);
    assert_eq!(results[0]["duplicate"], true);
    assert!(results[1].get("duplicate").is_none());
    assert_eq!(results[2]["id"], results[1]["id"]);
    assert_eq!(results[2]["duplicate"], true);
    let (status, error) = batch(
        &http,
        &server,
        &messages(vec![
            json!({"channel": "a", "data": "3"}),
            keyed("a", "other", "k1"),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        (error["error"].as_str(), error["index"].as_u64()),
        (Some("idempotency_conflict"), Some(1))
    );
    assert_eq!(retained(&http, &server, "a").await, ["1", "2"]);
}

/// Batches of 1,000 interleaved with single publishes, read by
/// subscribers of several channels: each subscriber gets every message of
/// its channels once, in one order, and each batch's messages together in
/// the batch's order.
#[tokio::test]
async fn large_batches_interleave_with_single_publishes() {
    let server = TestServer::builder()
        .retention(comet_store::Retention {
            max_messages: 100_000,
            ..comet_store::Retention::default()
        })
        .start();
    let http = client();
    let mut subscribers = Vec::new();
    for channels in ["a,b", "b,c", "a,b,c"] {
        let response = http
            .get(server.url(&format!("/stream/{channels}")))
            .send()
            .await
            .unwrap();
        let mut stream = NdjsonStream::new(response);
        within("a stream to open", stream.next_value()).await;
        subscribers.push((channels, stream));
    }
    let batches = {
        let http = http.clone();
        let url = server.url("/pub");
        tokio::spawn(async move {
            for b in 0..5 {
                let items: Vec<Value> = (0..1000)
                    .map(|i| {
                        let channel = ["a", "b", "c"][i % 3];
                        json!({"channel": channel, "data": format!("batch{b}:{i}")})
                    })
                    .collect();
                let response = http.post(&url).json(&messages(items)).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::CREATED);
            }
        })
    };
    let singles = {
        let http = http.clone();
        let base = server.base();
        tokio::spawn(async move {
            for i in 0..300 {
                comet_testkit::publish(
                    &http,
                    &base,
                    ["a", "b", "c"][i % 3],
                    &format!("single:{i}"),
                )
                .await;
            }
        })
    };
    batches.await.unwrap();
    singles.await.unwrap();
    for (channels, mut stream) in subscribers {
        let wanted: Vec<&str> = channels.split(',').collect();
        let of_wanted = |count: usize| {
            (0..count)
                .filter(|i| wanted.contains(&["a", "b", "c"][i % 3]))
                .count()
        };
        let expected = 5 * of_wanted(1000) + of_wanted(300);
        let mut data = Vec::new();
        while data.len() < expected {
            let item = within("every message", stream.next_item())
                .await
                .expect("a line");
            assert!(item.get("gap").is_none(), "{channels}: {item}");
            data.push(item["data"].as_str().unwrap().to_string());
        }
        let mut unique = data.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), expected, "{channels}: each message once");
        // Singles in their order; each batch's items contiguous, in order.
        let singles: Vec<usize> = data
            .iter()
            .filter_map(|d| d.strip_prefix("single:")?.parse().ok())
            .collect();
        assert!(
            singles.windows(2).all(|w| w[0] < w[1]),
            "{channels}: singles in order"
        );
        for b in 0..5 {
            let prefix = format!("batch{b}:");
            let positions: Vec<usize> = data
                .iter()
                .enumerate()
                .filter(|(_, d)| d.starts_with(&prefix))
                .map(|(position, _)| position)
                .collect();
            assert!(
                positions.windows(2).all(|w| w[1] == w[0] + 1),
                "{channels}: batch {b} is delivered together"
            );
            let items: Vec<usize> = positions
                .iter()
                .map(|p| data[*p][prefix.len()..].parse().unwrap())
                .collect();
            assert!(
                items.windows(2).all(|w| w[0] < w[1]),
                "{channels}: batch {b} in order"
            );
        }
    }
}
