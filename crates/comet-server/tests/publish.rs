//! `POST /pub/{channel}` against the real server.

use comet_testkit::{TestServer, client, raw, within};

#[tokio::test]
async fn a_publish_answers_201_with_channel_id_and_subscribers() {
    let server = TestServer::start();
    let http = client();
    let response = http
        .post(server.url("/pub/news"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "publish answers are JSON"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["channel"], "news");
    assert_eq!(body["subscribers"], 0);
    let id = body["id"].as_str().unwrap();
    assert!(
        id.bytes().all(|b| (0x21..=0x7e).contains(&b)) && id.len() <= 256,
        "ids are printable ASCII of at most 256 bytes: {id:?}"
    );
}

#[tokio::test]
async fn ids_increase_within_a_channel_and_are_unique_across_channels() {
    let server = TestServer::start();
    let http = client();
    let mut ids = Vec::new();
    for i in 0..20 {
        let channel = if i % 2 == 0 { "a" } else { "b" };
        ids.push(comet_testkit::publish(&http, &server.base(), channel, "x").await);
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "every id is unique");
    // Resuming from each id gives exactly the later messages: the ids order
    // the channel (checked here through the poll transport).
    for (index, id) in ids.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let url = server.url(&format!("/poll/a?since={}", comet_testkit::encode(id)));
        let body: serde_json::Value = comet_testkit::get_json(&http, &url).await;
        let later = body["messages"].as_array().unwrap().len();
        assert_eq!(later, (20 - index - 1) / 2, "after message {index}");
    }
}

#[tokio::test]
async fn the_subscriber_count_includes_every_transport_and_held_long_polls() {
    let server = TestServer::start();
    let http = client();
    let _sse = http.get(server.url("/sse/news")).send().await.unwrap();
    let _stream = http
        .get(server.url("/stream/news,other"))
        .send()
        .await
        .unwrap();
    let long_poll = tokio::spawn({
        let http = http.clone();
        let url = server.url("/poll/news?wait=30");
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    });
    // The long poll is held once the server counts it.
    comet_testkit::wait_for_metric(
        &http,
        &server.base(),
        "comet_subscribers{transport=\"longpoll\"} 1",
    )
    .await;
    let response = http
        .post(server.url("/pub/news"))
        .body("x")
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["subscribers"], 3);
    let answer = within("the long poll answer", long_poll).await.unwrap();
    assert_eq!(answer["messages"][0]["data"], "x");
}

#[tokio::test]
async fn the_event_parameter_sets_the_type() {
    let server = TestServer::start();
    let http = client();
    comet_testkit::publish_event(&http, &server.base(), "a", Some("price%20update"), "1").await;
    let body: serde_json::Value =
        comet_testkit::get_json(&http, &server.url("/poll/a?backlog=1")).await;
    assert_eq!(body["messages"][0]["event"], "price update");
}

async fn refused(server: &TestServer, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let response = client()
        .post(server.url(path))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "{path}"
    );
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn bad_publishes_get_a_clear_json_error_and_the_server_keeps_serving() {
    let server = TestServer::builder()
        .config(|c| c.max_body_bytes = 1000)
        .start();
    let long_name = format!("/pub/{}", "a".repeat(201));
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/pub/a%20b", b"x".to_vec(), 400, "invalid_channel"),
        ("/pub/a%2Fb", b"x".to_vec(), 400, "invalid_channel"),
        ("/pub/%C3%A9", b"x".to_vec(), 400, "invalid_channel"),
        ("/pub/%FF", b"x".to_vec(), 400, "invalid_channel"),
        ("/pub/a,b", b"x".to_vec(), 400, "invalid_channel"),
        (long_name.as_str(), b"x".to_vec(), 400, "invalid_channel"),
        ("/pub/a?event=", b"x".to_vec(), 400, "invalid_event"),
        ("/pub/a?event=a%0Ab", b"x".to_vec(), 400, "invalid_event"),
        ("/pub/a?event=a%0Db", b"x".to_vec(), 400, "invalid_event"),
        ("/pub/a?event=a%00b", b"x".to_vec(), 400, "invalid_event"),
        (
            "/pub/a?event=comet-gap",
            b"x".to_vec(),
            400,
            "reserved_event",
        ),
        // The browser's EventSource would take these for its own events.
        ("/pub/a?event=error", b"x".to_vec(), 400, "reserved_event"),
        ("/pub/a?event=open", b"x".to_vec(), 400, "reserved_event"),
        (
            "/pub/a?event=x&event=y",
            b"x".to_vec(),
            400,
            "duplicate_parameter",
        ),
        ("/pub/a", vec![0xff, 0xfe], 400, "invalid_data"),
        ("/pub/a", b"ok\xc3".to_vec(), 400, "invalid_data"),
        ("/pub/a", vec![b'x'; 1001], 413, "payload_too_large"),
        ("/pub/", b"x".to_vec(), 404, "not_found"),
        // `POST /pub` is a batch: JSON only.
        ("/pub", b"x".to_vec(), 415, "unsupported_media_type"),
    ];
    let too_long_event = format!("/pub/a?event={}", "e".repeat(65));
    let mut cases = cases;
    cases.push((too_long_event.as_str(), b"x".to_vec(), 400, "invalid_event"));
    for (path, body, status, code) in cases {
        let (got_status, error) = refused(&server, path, body).await;
        assert_eq!(
            (got_status, error["error"].as_str().unwrap()),
            (status, code),
            "{path}"
        );
        assert!(
            !error["message"].as_str().unwrap_or_default().is_empty(),
            "{path}: the error explains itself"
        );
    }
    // Exactly at the limit is fine, and the server still serves.
    let http = client();
    let ok = http
        .post(server.url("/pub/a"))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
}

#[tokio::test]
async fn an_oversized_chunked_body_is_refused_while_streaming() {
    let server = TestServer::builder()
        .config(|c| c.max_body_bytes = 1000)
        .start();
    let mut request =
        b"POST /pub/a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        request.extend_from_slice(b"200\r\n");
        request.extend_from_slice(&[b'y'; 0x200]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let response = raw::exchange(server.address(), &request).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.error_code(), "payload_too_large");
}

#[tokio::test]
async fn a_declared_oversized_body_is_refused_before_it_is_sent() {
    let server = TestServer::builder()
        .config(|c| c.max_body_bytes = 1000)
        .start();
    // The client announces 10 MB and waits for 100-continue: it gets 413 at
    // once instead of uploading.
    let request = b"POST /pub/a HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000\r\nexpect: 100-continue\r\n\r\n";
    let response = raw::exchange(server.address(), request).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.error_code(), "payload_too_large");
}

#[tokio::test]
async fn wrong_methods_are_405_in_json() {
    let server = TestServer::start();
    let http = client();
    for (method, path) in [
        (reqwest::Method::GET, "/pub/a"),
        (reqwest::Method::POST, "/sse/a"),
        (reqwest::Method::DELETE, "/poll/a"),
        (reqwest::Method::PUT, "/channels/a"),
    ] {
        let response = http
            .request(method.clone(), server.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed");
    }
}

#[tokio::test]
async fn every_character_of_the_name_alphabet_works_in_every_route() {
    let server = TestServer::start();
    let http = client();
    let name = "Az09_-.:@~";
    let id = comet_testkit::publish(&http, &server.base(), name, "x").await;
    let info = comet_testkit::get_json(&http, &server.url(&format!("/channels/{name}"))).await;
    assert_eq!(info["channel"], name);
    assert_eq!(info["last_id"], id.as_str());
    let answer =
        comet_testkit::get_json(&http, &server.url(&format!("/poll/{name}?backlog=1"))).await;
    assert_eq!(answer["messages"][0]["channel"], name);
}
