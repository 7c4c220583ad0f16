//! Server limits, each with a clear error: the connection cap, the request
//! head timeout and size, and the health and metrics endpoints that report
//! on them.

use std::time::Duration;

use comet_testkit::{SseStream, TestServer, client, raw, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_get_503_in_json_until_a_place_frees() {
    let server = TestServer::builder()
        .config(|c| {
            c.max_connections = 3;
            c.max_subscribers = 3;
            c.heartbeat = Duration::from_millis(50);
        })
        .start();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let http = client();
        let mut stream = SseStream::new(http.get(server.url("/sse/a")).send().await.unwrap());
        stream.until_raw(b"retry:").await;
        streams.push((http, stream));
    }
    let refused = raw::exchange(
        server.address(),
        b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.error_code(), "too_many_connections");
    assert_eq!(refused.header("connection").as_deref(), Some("close"));

    // Once a subscriber leaves, its place is given to the next client.
    streams.pop();
    within("a freed place", async {
        loop {
            let answer = raw::exchange(
                server.address(),
                b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            )
            .await;
            if answer.status == 200 {
                return;
            }
            assert_eq!(answer.status, 503);
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_request_head_that_is_too_slow_gets_408() {
    let server = TestServer::builder()
        .config(|c| c.header_read_timeout = Duration::from_millis(200))
        .start();
    let mut stream = raw::connect(server.address()).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost:")
        .await
        .unwrap();
    let response = raw::read_response(&mut stream).await;
    assert_eq!(response.status, 408);
    assert_eq!(response.error_code(), "request_timeout");
}

#[tokio::test]
async fn an_idle_connection_is_closed_without_an_answer() {
    let server = TestServer::builder()
        .config(|c| c.header_read_timeout = Duration::from_millis(200))
        .start();
    let mut stream = raw::connect(server.address()).await;
    assert!(raw::closes_within(&mut stream, Duration::from_secs(10)).await);
    // Not silently: the server counts why it closed it.
    comet_testkit::wait_for_metric(
        &client(),
        &server.base(),
        "comet_connections_closed_total{reason=\"idle\"} 1",
    )
    .await;
}

/// One publish on `stream`, answered on the direct path (which reads the
/// next head itself): it must be a `201`.
async fn publish_on(stream: &mut tokio::net::TcpStream) {
    stream
        .write_all(b"POST /pub/paced HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
        .await
        .unwrap();
    assert_eq!(raw::read_response(stream).await.status, 201);
}

#[tokio::test]
async fn the_head_timeout_counts_from_each_answer() {
    let timeout = Duration::from_millis(400);
    let server = TestServer::builder()
        .config(|c| c.header_read_timeout = timeout)
        .start();
    let mut stream = raw::connect(server.address()).await;
    // Requests well within the timeout of each other, for four times its
    // length: each starts it again.
    let started = std::time::Instant::now();
    while started.elapsed() < timeout * 4 {
        publish_on(&mut stream).await;
        tokio::time::sleep(timeout / 8).await;
    }
    // Once the client is quiet, it runs out all the same.
    assert!(raw::closes_within(&mut stream, Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_closes_idle_keep_alive_connections_at_once() {
    let mut server = TestServer::builder()
        .config(|c| {
            c.header_read_timeout = Duration::from_secs(600);
            c.shutdown_grace = Duration::from_secs(30);
        })
        .start();
    let mut stream = raw::connect(server.address()).await;
    publish_on(&mut stream).await;
    // The connection now waits for its next request head; neither its
    // timeout nor the grace period is near, so only the shutdown ends it.
    let restarted = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    });
    assert!(raw::closes_within(&mut stream, Duration::from_secs(5)).await);
    let server = within("the restart", restarted).await.unwrap();
    let mut again = raw::connect(server.address()).await;
    publish_on(&mut again).await;
}

#[tokio::test]
async fn a_request_head_that_is_too_large_gets_431() {
    let server = TestServer::builder()
        .config(|c| c.max_head_bytes = 8 * 1024)
        .start();
    let mut request = b"GET /healthz HTTP/1.1\r\nhost: x\r\ncookie: ".to_vec();
    request.extend(std::iter::repeat_n(b'c', 10 * 1024));
    request.extend_from_slice(b"\r\n\r\n");
    let response = raw::exchange(server.address(), &request).await;
    assert_eq!(response.status, 431);
    assert_eq!(response.error_code(), "headers_too_large");

    let mut many = b"GET /healthz HTTP/1.1\r\nhost: x\r\n".to_vec();
    for i in 0..150 {
        many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let response = raw::exchange(server.address(), &many).await;
    assert_eq!(response.status, 431);
}

#[tokio::test]
async fn a_request_that_is_not_http_gets_400() {
    let server = TestServer::start();
    let response = raw::exchange(server.address(), b"HELLO THERE\r\n\r\n").await;
    assert_eq!(response.status, 400);
    assert_eq!(response.error_code(), "malformed_request");
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let server = TestServer::start();
    let mut stream = raw::connect(server.address()).await;
    for _ in 0..3 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let response = raw::read_response(&mut stream).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.json(), serde_json::json!({"status": "ok"}));
    }
}

#[tokio::test]
async fn metrics_count_what_happens() {
    let server = TestServer::start();
    let http = client();
    let mut stream = SseStream::new(http.get(server.url("/sse/m")).send().await.unwrap());
    for i in 0..3 {
        comet_testkit::publish(&http, &server.base(), "m", &i.to_string()).await;
    }
    stream.events(3).await;
    let response = http.get(server.url("/metrics")).send().await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    for expected in [
        "comet_messages_published_total 3",
        "comet_deliveries_total{transport=\"sse\"} 3",
        "comet_subscribers{transport=\"sse\"} 1",
        "comet_gaps_total{reason=\"trimmed\"} 0",
        "comet_slow_consumer_actions_total{action=\"replayed_from_history\"} 0",
        "comet_followed_channels 1",
        "# EOF",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

/// Trickles `body`'s bytes one at a time after `head` until the server
/// answers; returns the answer.
async fn trickle(server: &TestServer, head: &[u8], body: &[u8]) -> raw::RawResponse {
    let mut stream = raw::connect(server.address()).await;
    stream.write_all(head).await.unwrap();
    let reading = async {
        for byte in body {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Everything sent: wait for the answer.
        raw::read_response(&mut stream).await
    };
    within("an answer to a trickled body", reading).await
}

/// A client that sends its body a byte at a time, each within any idle
/// timeout, cannot hold a connection longer than the body deadline: 408,
/// on the direct path and through the router alike.
#[tokio::test]
async fn a_body_that_trickles_in_gets_408_at_the_body_deadline() {
    let server = TestServer::builder()
        .config(|c| c.body_read_timeout = Duration::from_millis(300))
        .start();
    let body = vec![b'x'; 200];
    // Plain: the direct path.
    let head = b"POST /pub/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 200\r\n\r\n";
    let answer = trickle(&server, head, &body).await;
    assert_eq!(answer.status, 408);
    assert_eq!(answer.error_code(), "request_timeout");
    // Chunked: the router.
    let head = b"POST /pub/slow HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nc8\r\n";
    let answer = trickle(&server, head, &body).await;
    assert_eq!(answer.status, 408);
    assert_eq!(answer.error_code(), "request_timeout");
    // Nothing was stored.
    let channel = raw::exchange(
        server.address(),
        b"GET /channels/slow HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    assert_eq!(channel.status, 404);
}

/// Refusals hold a socket while their answer goes out; beyond a bound,
/// further connections are closed at once instead of piling up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_in_flight_are_bounded() {
    let server = TestServer::builder()
        .config(|c| {
            c.max_connections = 1;
            c.max_subscribers = 1;
        })
        .start();
    let http = client();
    let mut held = SseStream::new(http.get(server.url("/sse/a")).send().await.unwrap());
    held.until_raw(b"retry:").await;
    // Refused clients that never close keep their refusal busy for its
    // whole drain (a second); eight refusals fit at once with this cap.
    let mut refused = Vec::new();
    for _ in 0..8 {
        let mut stream = raw::connect(server.address()).await;
        let answer = raw::read_response(&mut stream).await;
        assert_eq!(answer.error_code(), "too_many_connections");
        refused.push(stream);
    }
    let mut beyond = raw::connect(server.address()).await;
    let mut first = [0u8; 1];
    let read = within("the connection beyond the bound", beyond.read(&mut first)).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without an answer, not {read:?}"
    );
}
