//! Every malformed name, parameter and header on the subscription and
//! inspection endpoints gets a clear JSON 4xx, and the server keeps serving.

use comet_testkit::{TestServer, client, publish, raw};

async fn expect_error(
    server: &TestServer,
    path: &str,
    header: Option<(&str, &str)>,
    status: u16,
    code: &str,
) {
    let mut request = client().get(server.url(path));
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), status, "{path} {header:?}");
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "{path}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{path} {header:?}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{path}: a human message"
    );
}

#[tokio::test]
async fn malformed_subscriptions_are_refused_on_every_transport() {
    let server = TestServer::builder()
        .config(|c| c.max_channels_per_subscription = 4)
        .start();
    let long = "x".repeat(201);
    for transport in ["poll", "stream", "sse"] {
        let cases: Vec<(String, &str)> = vec![
            (format!("/{transport}/a%20b"), "invalid_channel"),
            (format!("/{transport}/a,,b"), "invalid_channel"),
            (format!("/{transport}/,a"), "invalid_channel"),
            (format!("/{transport}/a,"), "invalid_channel"),
            (format!("/{transport}/%FF"), "invalid_channel"),
            (format!("/{transport}/a%2Fb"), "invalid_channel"),
            (format!("/{transport}/{long}"), "invalid_channel"),
            (format!("/{transport}/a,b,c,d,e"), "too_many_channels"),
            (format!("/{transport}/a?since=garbage"), "invalid_cursor"),
            (format!("/{transport}/a?since=abc-"), "invalid_cursor"),
            (format!("/{transport}/a?since=ABC-1"), "invalid_cursor"),
            (format!("/{transport}/a?since=abc-01"), "invalid_cursor"),
            (
                format!("/{transport}/a?since=abc-99999999999999999999"),
                "invalid_cursor",
            ),
            (format!("/{transport}/a?lastEventId=%00"), "invalid_cursor"),
            (
                format!("/{transport}/a?since=a-1&since=a-2"),
                "duplicate_parameter",
            ),
            (format!("/{transport}/a?backlog=-1"), "invalid_backlog"),
            (format!("/{transport}/a?backlog=x"), "invalid_backlog"),
            (format!("/{transport}/a?backlog=1.5"), "invalid_backlog"),
            (
                format!("/{transport}/a?backlog=99999999999999999999999"),
                "invalid_backlog",
            ),
            (format!("/{transport}/a?wait=-1"), "invalid_wait"),
            (format!("/{transport}/a?wait=soon"), "invalid_wait"),
            (format!("/{transport}/a?wait=inf"), "invalid_wait"),
        ];
        for (path, code) in cases {
            expect_error(&server, &path, None, 400, code).await;
        }
        let path = format!("/{transport}/a");
        expect_error(
            &server,
            &path,
            Some(("Last-Event-ID", "not an id")),
            400,
            "invalid_cursor",
        )
        .await;
        expect_error(
            &server,
            &path,
            Some(("Last-Event-ID", "x-1-2")),
            400,
            "invalid_cursor",
        )
        .await;
    }
    // Four distinct channels is the limit; duplicates do not count twice.
    let ok = client()
        .get(server.url("/poll/a,b,c,d,a,b"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn a_last_event_id_that_is_not_ascii_is_refused() {
    let server = TestServer::start();
    let request = b"GET /sse/a HTTP/1.1\r\nhost: x\r\nlast-event-id: \xff\xfe\r\n\r\n";
    let response = raw::exchange(server.address(), request).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.error_code(), "invalid_cursor");
}

#[tokio::test]
async fn inspection_validates_names_and_knows_unknown_channels() {
    let server = TestServer::start();
    expect_error(&server, "/channels/a%20b", None, 400, "invalid_channel").await;
    expect_error(&server, "/channels/never", None, 404, "channel_not_found").await;
    expect_error(&server, "/nothing/here", None, 404, "not_found").await;
    expect_error(&server, "/sse/", None, 404, "not_found").await;
    expect_error(&server, "/poll", None, 404, "not_found").await;
    let http = client();
    let id = publish(&http, &server.base(), "seen", "x").await;
    let info: serde_json::Value =
        comet_testkit::get_json(&http, &server.url("/channels/seen")).await;
    assert_eq!(
        info,
        serde_json::json!({"channel": "seen", "subscribers": 0, "messages": 1, "last_id": id})
    );
}

#[tokio::test]
async fn unknown_query_parameters_are_ignored() {
    let server = TestServer::start();
    let response = client()
        .get(server.url("/poll/a?_=1700000000&foo=bar&since"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "an empty since counts as absent");
}

#[tokio::test]
async fn the_server_still_serves_after_a_barrage_of_bad_requests() {
    let server = TestServer::start();
    let garbage: [&[u8]; 6] = [
        b"HELLO\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /sse/a HTTP/1.1\r\nbad header line\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"POST /pub/a HTTP/1.1\r\ncontent-length: abc\r\n\r\n",
        b"POST /pub/a HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
    ];
    for request in garbage {
        let response = raw::exchange(server.address(), request).await;
        assert!(
            (400..500).contains(&response.status),
            "{:?} -> {}",
            String::from_utf8_lossy(request),
            response.status
        );
    }
    let http = client();
    publish(&http, &server.base(), "still", "alive").await;
    assert_eq!(
        http.get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
