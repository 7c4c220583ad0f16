//! Streams are served straight on the socket when a connection's first
//! request opens one, and through the router otherwise. Both must look the
//! same to a client; the socket path must notice a client leaving and
//! ignore whatever a client sends after its request.

use std::time::Duration;

use comet_testkit::raw::{chunked_body, connect};
use comet_testkit::{TestServer, client, publish, wait_for_metric, within};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Sends `request`, returns the response head and the de-chunked body as
/// it arrives.
async fn open_raw(
    server: &TestServer,
    request: &str,
) -> futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>> {
    let mut stream = connect(server.address()).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    chunked_body(stream).await
}

/// Reads `body` until it contains `needle`; returns everything read.
async fn read_until(
    body: &mut futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    needle: &str,
) -> String {
    let mut text = String::new();
    within(needle, async {
        while !text.contains(needle) {
            let chunk = body.next().await.expect("the stream went on").unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    text
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: comet\r\naccept: text/event-stream\r\n\r\n")
}

#[tokio::test]
async fn socket_and_router_paths_send_identical_streams() {
    let server = TestServer::start();
    let http = client();
    // A plain channel list takes the socket path; a percent-encoded one
    // (the same two channels) is left to the router.
    let mut direct = open_raw(&server, &get("/sse/a,b")).await;
    let mut routed = open_raw(&server, &get("/sse/a%2Cb")).await;
    let mut direct_lines = open_raw(&server, &get("/stream/a,b")).await;
    let mut routed_lines = open_raw(&server, &get("/stream/a%2Cb")).await;
    wait_for_metric(
        &http,
        &server.base(),
        "comet_subscribers{transport=\"sse\"} 2",
    )
    .await;
    wait_for_metric(
        &http,
        &server.base(),
        "comet_subscribers{transport=\"stream\"} 2",
    )
    .await;
    publish(&http, &server.base(), "a", "one").await;
    publish(&http, &server.base(), "b", "two\nlines").await;
    let last = publish(&http, &server.base(), "a", "three").await;

    let direct = read_until(&mut direct, &format!("id: {last}")).await;
    let routed = read_until(&mut routed, &format!("id: {last}")).await;
    assert!(direct.starts_with("retry:"), "{direct:?}");
    assert_eq!(direct, routed, "SSE bytes differ between the two paths");

    let direct_lines = read_until(&mut direct_lines, &last).await;
    let routed_lines = read_until(&mut routed_lines, &last).await;
    assert!(
        direct_lines.contains("\"data\":\"two\\nlines\""),
        "{direct_lines:?}"
    );
    assert_eq!(
        direct_lines, routed_lines,
        "NDJSON bytes differ between the two paths"
    );
}

#[tokio::test]
async fn response_heads_match_between_paths() {
    let server = TestServer::builder()
        .config(|config| config.cors = comet_server::CorsPolicy::Any)
        .start();
    let request = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nhost: comet\r\norigin: https://app.example\r\n\r\n")
    };
    let mut heads = Vec::new();
    for path in ["/sse/h", "/sse/%68"] {
        let mut stream = connect(server.address()).await;
        stream.write_all(request(path).as_bytes()).await.unwrap();
        let head = comet_testkit::raw::read_head_only(&mut stream).await;
        let mut lines: Vec<String> = head
            .to_ascii_lowercase()
            .lines()
            .filter(|line| !line.starts_with("date:"))
            .map(str::to_string)
            .collect();
        lines.sort();
        heads.push(lines);
    }
    assert!(
        heads[0].contains(&"access-control-allow-origin: https://app.example".to_string()),
        "{:?}",
        heads[0]
    );
    assert_eq!(heads[0], heads[1]);
}

#[tokio::test]
async fn a_client_that_leaves_is_forgotten_without_waiting_for_a_heartbeat() {
    // No heartbeat for an hour: only watching the socket can notice.
    let server = TestServer::builder()
        .config(|config| config.heartbeat = Duration::from_secs(3600))
        .start();
    let http = client();
    let mut stream: TcpStream = connect(server.address()).await;
    stream
        .write_all(get("/sse/leaving").as_bytes())
        .await
        .unwrap();
    wait_for_metric(
        &http,
        &server.base(),
        "comet_subscribers{transport=\"sse\"} 1",
    )
    .await;
    drop(stream);
    wait_for_metric(
        &http,
        &server.base(),
        "comet_subscribers{transport=\"sse\"} 0",
    )
    .await;
    wait_for_metric(&http, &server.base(), "comet_followed_channels 0").await;
}

#[tokio::test]
async fn bytes_sent_after_the_request_are_ignored() {
    let server = TestServer::start();
    let http = client();
    let mut stream = connect(server.address()).await;
    let pipelined = format!(
        "{}GET /healthz HTTP/1.1\r\nhost: comet\r\n\r\n",
        get("/sse/p")
    );
    stream.write_all(pipelined.as_bytes()).await.unwrap();
    wait_for_metric(
        &http,
        &server.base(),
        "comet_subscribers{transport=\"sse\"} 1",
    )
    .await;
    stream.write_all(&[0xff; 10_000]).await.unwrap();
    let id = publish(&http, &server.base(), "p", "still here").await;
    let mut body = chunked_body(stream).await;
    let text = read_until(&mut body, &format!("id: {id}")).await;
    assert!(text.contains("data: still here\n"), "{text:?}");
    assert!(
        !text.contains("\"status\""),
        "the pipelined request was answered"
    );
}
