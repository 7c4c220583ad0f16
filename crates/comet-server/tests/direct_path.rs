//! Publishes, polls and streams are served on a direct path, everything
//! else (and anything unusual about those) through the router. Both must
//! look the same to a client, one keep-alive connection may move from the
//! first to the second, a stream must notice its client leaving, and bytes
//! a client sends after a stream request are ignored.

use std::time::Duration;

use comet_testkit::raw::{chunked_body, connect, read_pipelined, read_response};
use comet_testkit::{TestServer, client, metric_value, metrics, publish, wait_for_metric, within};
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

/// One request on an open connection; its response.
async fn ask(stream: &mut TcpStream, request: &str) -> comet_testkit::raw::RawResponse {
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(stream).await
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: comet\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn one_connection_moves_from_the_direct_path_to_the_router() {
    let server = TestServer::start();
    let mut stream = connect(server.address()).await;
    let published = ask(&mut stream, &post("/pub/k", "first")).await;
    assert_eq!(published.status, 201, "{published:?}");
    assert_eq!(
        published.header("content-type").as_deref(),
        Some("application/json")
    );
    let id = published.json()["id"].as_str().unwrap().to_string();

    // An error on the direct path is JSON, and the connection stays.
    let refused = ask(&mut stream, &post("/pub/bad%20name", "x")).await;
    assert_eq!(refused.status, 400);
    let refused = ask(&mut stream, &post("/pub/k?event=comet-x", "x")).await;
    assert_eq!(refused.error_code(), "reserved_event", "{refused:?}");

    let polled = ask(
        &mut stream,
        "GET /poll/k?backlog=5 HTTP/1.1\r\nhost: comet\r\n\r\n",
    )
    .await;
    assert_eq!(polled.status, 200, "{polled:?}");
    assert_eq!(polled.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(polled.json()["messages"][0]["id"], id.as_str());

    // A route of the router: the rest of the connection goes there.
    let inspected = ask(
        &mut stream,
        "GET /channels/k HTTP/1.1\r\nhost: comet\r\n\r\n",
    )
    .await;
    assert_eq!(inspected.status, 200, "{inspected:?}");
    let again = ask(&mut stream, &post("/pub/k", "second")).await;
    assert_eq!(again.status, 201, "{again:?}");
    let polled = ask(
        &mut stream,
        &format!(
            "GET /poll/k?since={} HTTP/1.1\r\nhost: comet\r\n\r\n",
            comet_testkit::encode(&id)
        ),
    )
    .await;
    assert_eq!(polled.json()["messages"][0]["data"], "second");
}

#[tokio::test]
async fn a_body_arriving_in_pieces_is_published_whole() {
    let server = TestServer::start();
    let http = client();
    let mut stream = connect(server.address()).await;
    let data = "x".repeat(100_000);
    let request = post("/pub/pieces", &data);
    let (head, body) = request.split_at(request.len() - data.len());
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    for piece in body.as_bytes().chunks(7_001) {
        stream.write_all(piece).await.unwrap();
        stream.flush().await.unwrap();
    }
    let published = read_response(&mut stream).await;
    assert_eq!(published.status, 201, "{published:?}");
    let polled = comet_testkit::get_json(&http, &server.url("/poll/pieces?backlog=1")).await;
    assert_eq!(
        polled["messages"][0]["data"].as_str().unwrap().len(),
        data.len()
    );
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let server = TestServer::start();
    let mut stream = connect(server.address()).await;
    let request =
        "POST /pub/c HTTP/1.1\r\nhost: comet\r\nconnection: close\r\ncontent-length: 1\r\n\r\nx";
    let published = ask(&mut stream, request).await;
    assert_eq!(published.status, 201);
    assert_eq!(published.header("connection").as_deref(), Some("close"));
    assert!(
        comet_testkit::raw::closes_within(&mut stream, comet_testkit::TIMEOUT).await,
        "the server kept the connection open"
    );
}

/// The sorted lines of a response head, without the date.
fn head_lines(head: &str) -> Vec<String> {
    let mut lines: Vec<String> = head
        .to_ascii_lowercase()
        .lines()
        .filter(|line| !line.starts_with("date:") && !line.is_empty())
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn a_page_s_preflight_is_answered_like_the_router_and_keeps_its_connection() {
    let server = TestServer::builder()
        .config(|config| {
            config.cors = comet_server::CorsPolicy::Origins(vec!["https://app.example".into()]);
        })
        .start();
    let http = client();
    let preflight = |path: &str| {
        format!(
            "OPTIONS {path} HTTP/1.1\r\nhost: comet\r\norigin: https://app.example\r\n\
             access-control-request-method: GET\r\naccess-control-request-headers: authorization\r\n\r\n"
        )
    };
    // A plain path is answered here; the percent-encoded one (the same
    // channel) by the router: the same answer.
    let mut direct = connect(server.address()).await;
    direct
        .write_all(preflight("/poll/held").as_bytes())
        .await
        .unwrap();
    let answer = within("the preflight's answer", read_response(&mut direct)).await;
    let routed = within(
        "the router's preflight answer",
        comet_testkit::raw::exchange(server.address(), preflight("/poll/%68eld").as_bytes()),
    )
    .await;
    assert_eq!(answer.status, 204);
    assert_eq!(routed.status, 204);
    assert!(answer.body.is_empty());
    let lines = head_lines(&answer.head);
    assert!(
        lines.contains(&"access-control-allow-origin: https://app.example".to_string()),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("access-control-allow-headers:")
                && line.contains("authorization")),
        "{lines:?}"
    );
    // The router adds the route's `Allow`, which no browser reads in a
    // preflight; everything else is the same.
    let mut routed_lines = head_lines(&routed.head);
    routed_lines.retain(|line| !line.starts_with("allow:"));
    assert_eq!(lines, routed_lines);

    // The request it cleared comes on the same connection and stays on the
    // direct path: the long poll parks there.
    direct
        .write_all(
            b"GET /poll/held?wait=30 HTTP/1.1\r\nhost: comet\r\norigin: https://app.example\r\n\r\n",
        )
        .await
        .unwrap();
    wait_for_metric(&http, &server.base(), "comet_parked_polls 1").await;
    publish(&http, &server.base(), "held", "cleared").await;
    let polled = within("the parked answer", read_response(&mut direct)).await;
    assert_eq!(polled.status, 200);
    assert_eq!(polled.json()["messages"][0]["data"], "cleared");

    // A preflight without an origin is not a page's: the router answers it
    // (and the connection is its from then on), as before.
    let plain = within(
        "an answer to a preflight without an origin",
        comet_testkit::raw::exchange(
            server.address(),
            b"OPTIONS /poll/held HTTP/1.1\r\nhost: comet\r\nconnection: close\r\n\r\n",
        ),
    )
    .await;
    assert_ne!(plain.status, 204);
}

#[tokio::test]
async fn a_parked_long_poll_answers_like_the_router_and_keeps_its_connection() {
    let server = TestServer::builder()
        .config(|config| config.cors = comet_server::CorsPolicy::Any)
        .start();
    let http = client();
    let poll = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nhost: comet\r\norigin: https://app.example\r\n\r\n")
    };
    // The plain path parks on the direct path; the percent-encoded one
    // (the same channel) waits in the router.
    let mut direct = connect(server.address()).await;
    let mut routed = connect(server.address()).await;
    direct
        .write_all(poll("/poll/held?wait=30").as_bytes())
        .await
        .unwrap();
    routed
        .write_all(poll("/poll/%68eld?wait=30").as_bytes())
        .await
        .unwrap();
    // Both wait, and the direct one is parked: the publish hands it over.
    wait_for_metric(
        &http,
        &server.base(),
        "comet_subscribers{transport=\"longpoll\"} 2",
    )
    .await;
    wait_for_metric(&http, &server.base(), "comet_parked_polls 1").await;
    let id = publish(&http, &server.base(), "held", "released").await;
    let direct_answer = within("the parked answer", read_response(&mut direct)).await;
    let routed_answer = within("the routed answer", read_response(&mut routed)).await;
    assert_eq!(direct_answer.status, 200);
    assert_eq!(direct_answer.body, routed_answer.body);
    assert_eq!(direct_answer.json()["cursor"], id.as_str());
    assert_eq!(direct_answer.json()["messages"][0]["data"], "released");
    let direct_head = head_lines(&direct_answer.head);
    assert!(
        direct_head.contains(&"access-control-allow-origin: https://app.example".to_string()),
        "{direct_head:?}"
    );
    assert_eq!(direct_head, head_lines(&routed_answer.head));

    // The same connection serves the next poll, which parks again.
    direct
        .write_all(
            poll(&format!(
                "/poll/held?wait=30&since={}",
                comet_testkit::encode(&id)
            ))
            .as_bytes(),
        )
        .await
        .unwrap();
    wait_for_metric(&http, &server.base(), "comet_parked_polls 1").await;
    let next = publish(&http, &server.base(), "held", "again").await;
    let again = within("the second parked answer", read_response(&mut direct)).await;
    assert_eq!(again.json()["messages"][0]["data"], "again");
    assert_eq!(again.json()["cursor"], next.as_str());
}

/// A connection whose receive buffer is small, and whose segments are
/// too (so the server's send buffer, sized by them, is small as well).
async fn small_buffered_connection(address: std::net::SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_tcp_mss(536).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&address.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    TcpStream::from_std(socket.into()).unwrap()
}

#[tokio::test]
async fn pipelined_publishes_read_late_are_each_answered_whole_and_in_order() {
    // A client sends a thousand publishes and reads no answer until the
    // server stops answering: the socket to it is full, and an answer was
    // cut where it filled (the rest written once the client reads).
    const PUBLISHES: u64 = 1_000;
    // The longest name: each answer holds it twice.
    let channel = "p".repeat(comet_protocol::MAX_CHANNEL_NAME_LEN);
    let server = TestServer::start();
    let http = client();
    let mut stream = small_buffered_connection(server.address()).await;
    let requests: String = (0..PUBLISHES)
        .map(|i| post(&format!("/pub/{channel}"), &format!("message {i}")))
        .collect();
    let (mut reading, mut writing) = stream.split();
    let sending = writing.write_all(requests.as_bytes());
    let stalled = async {
        let mut published = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = metric_value(
                &metrics(&http, &server.base()).await,
                "comet_messages_published_total",
            );
            if now == published && now > 0 {
                return now;
            }
            published = now;
        }
    };
    let (sent, stalled_at) = within("the server to stop answering", async {
        tokio::join!(sending, stalled)
    })
    .await;
    sent.unwrap();
    assert!(
        stalled_at < PUBLISHES,
        "the server answered all {PUBLISHES} publishes before anyone read ({stalled_at})"
    );

    let answers = read_pipelined(&mut reading, PUBLISHES as usize).await;
    let mut seqs = Vec::new();
    for answer in &answers {
        assert_eq!(answer.status, 201, "{answer:?}");
        let id = answer.json()["id"].as_str().unwrap().to_string();
        let cursor = id.split('/').next().unwrap();
        let seq: u64 = cursor.rsplit('-').next().unwrap().parse().unwrap();
        seqs.push(seq);
    }
    assert!(
        seqs.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "each publish stored once, answered in the order of the publishes: {seqs:?}"
    );
    let info = comet_testkit::get_json(&http, &server.url(&format!("/channels/{channel}"))).await;
    let last = answers.last().unwrap().json();
    assert_eq!(info["last_id"], last["id"], "{info}");
}

#[tokio::test]
async fn a_publish_answered_at_its_commit_looks_like_the_router_s_answer() {
    // On the durable store the direct path's answer is written by the
    // store's writer; the percent-encoded name (the same channel) goes
    // through the router.
    let server = TestServer::builder()
        .config(|config| config.cors = comet_server::CorsPolicy::Any)
        .start();
    let request = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: comet\r\norigin: https://app.example\r\n\
             content-length: 5\r\n\r\nhello"
        )
    };
    let mut direct = connect(server.address()).await;
    let first = ask(&mut direct, &request("/pub/same")).await;
    let routed = within(
        "the router's answer",
        comet_testkit::raw::exchange(server.address(), request("/pub/%73ame").as_bytes()),
    )
    .await;
    // The connection stays open for the next publish.
    let second = ask(&mut direct, &request("/pub/same")).await;
    for answer in [&first, &second, &routed] {
        assert_eq!(answer.status, 201, "{answer:?}");
    }
    let (first_head, routed_head) = (head_lines(&first.head), head_lines(&routed.head));
    assert!(
        first_head.contains(&"access-control-allow-origin: https://app.example".to_string()),
        "{first_head:?}"
    );
    assert_eq!(first_head, routed_head);
    assert_eq!(head_lines(&second.head), routed_head);
    let (first, routed, second) = (first.json(), routed.json(), second.json());
    assert_eq!(first["channel"], "same");
    assert_eq!(routed["channel"], "same");
    let seq = |answer: &serde_json::Value| -> u64 {
        let id = answer["id"].as_str().unwrap();
        let cursor = id.strip_suffix("/same").expect("an id of the channel");
        cursor.rsplit('-').next().unwrap().parse().unwrap()
    };
    assert_eq!((seq(&first), seq(&routed), seq(&second)), (1, 2, 3));
    let keys = |answer: &serde_json::Value| -> Vec<String> {
        answer.as_object().unwrap().keys().cloned().collect()
    };
    assert_eq!(keys(&first), keys(&routed));
}
