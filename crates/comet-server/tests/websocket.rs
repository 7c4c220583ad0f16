//! `GET /ws/{channels}`: the WebSocket transport, read frame by frame with
//! a client written from RFC 6455 (`comet_testkit::ws`), and with
//! `tokio-tungstenite`, a maintained third-party client.

use std::time::Duration;

use comet_testkit::raw;
use comet_testkit::ws::{Frame, RawWebSocket, masked};
use comet_testkit::{
    TestServer, client, encode, metrics, publish, publish_event, publish_numbered, within,
};
use serde_json::json;

async fn open(server: &TestServer, path: &str) -> RawWebSocket {
    let mut socket = RawWebSocket::connect(server.address(), path).await;
    assert_eq!(
        socket.next_frame().await,
        Some(Frame::Text("{\"heartbeat\":true}".into())),
        "a heartbeat object first"
    );
    socket
}

#[tokio::test]
async fn each_message_is_one_text_frame_holding_the_ndjson_object() {
    let server = TestServer::start();
    let http = client();
    let mut socket = open(&server, "/ws/news").await;
    let datas = [
        "plain",
        "two\nlines",
        "",
        "quote \" tab \t ✓",
        &"x".repeat(70_000),
    ];
    let mut ids = Vec::new();
    for data in datas {
        ids.push(publish(&http, &server.base(), "news", data).await);
    }
    let typed = publish_event(&http, &server.base(), "news", Some("kind"), "t").await;
    for (data, id) in datas.iter().zip(&ids) {
        assert_eq!(
            socket.next_item().await,
            json!({"id": id, "channel": "news", "event": "message", "data": data})
        );
    }
    assert_eq!(
        socket.next_item().await,
        json!({"id": typed, "channel": "news", "event": "kind", "data": "t"})
    );
    let text = metrics(&http, &server.base()).await;
    assert!(
        text.contains("comet_subscribers{transport=\"ws\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn resume_with_since_is_exact_and_gaps_are_objects() {
    let server = TestServer::builder().keep_messages(3).start();
    let http = client();
    let ids = publish_numbered(&http, &server.base(), "news", 6).await;
    let mut exact = open(&server, &format!("/ws/news?since={}", encode(&ids[3]))).await;
    assert_eq!(exact.next_item().await["data"], "4");
    assert_eq!(exact.next_item().await["data"], "5");
    let mut behind = open(&server, &format!("/ws/news?since={}", encode(&ids[0]))).await;
    assert_eq!(
        behind.next_item().await,
        json!({"gap": {"channel": "news", "reason": "trimmed"}})
    );
    for expected in ["3", "4", "5"] {
        assert_eq!(behind.next_item().await["data"], expected);
    }
    let mut backlog = open(&server, "/ws/news,other?backlog=2").await;
    assert_eq!(backlog.next_item().await["data"], "4");
    assert_eq!(backlog.next_item().await["data"], "5");
}

/// A handshake request, with `fields` after the request line.
fn handshake(path: &str, fields: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: x\r\n{fields}\r\n").into_bytes()
}

const GOOD: &str = "upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[tokio::test]
async fn a_malformed_handshake_gets_a_clear_400_and_nothing_is_upgraded() {
    let server = TestServer::start();
    let address = server.address();
    let cases = [
        ("", "`Upgrade: websocket` is missing"),
        (
            "upgrade: h2c\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "`Upgrade: websocket` is missing",
        ),
        (
            "upgrade: websocket\r\nconnection: keep-alive\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "`Connection` does not list `Upgrade`",
        ),
        (
            "upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "only version 13",
        ),
        (
            "upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 8\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "only version 13",
        ),
        (
            "upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\n",
            "`Sec-WebSocket-Key`",
        ),
        (
            "upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: short\r\n",
            "`Sec-WebSocket-Key`",
        ),
    ];
    for (fields, says) in cases {
        let answer = raw::exchange(address, &handshake("/ws/news", fields)).await;
        assert_eq!(answer.status, 400, "{fields:?}: {}", answer.head);
        assert_eq!(answer.error_code(), "bad_websocket_handshake");
        let message = answer.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains(says), "{fields:?}: {message}");
        if says == "only version 13" {
            assert_eq!(
                answer.header("sec-websocket-version").as_deref(),
                Some("13")
            );
        }
    }
    // A valid handshake for a request any transport refuses: that error.
    let answer = raw::exchange(address, &handshake("/ws/bad%20name", GOOD)).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), "invalid_channel", "{}", answer.head);
    let answer = raw::exchange(address, &handshake("/ws/bad!name", GOOD)).await;
    assert_eq!(answer.error_code(), "invalid_channel");
    let answer = raw::exchange(address, &handshake("/ws/news?since=nonsense", GOOD)).await;
    assert_eq!(answer.error_code(), "invalid_cursor");
    let answer = raw::exchange(
        address,
        format!("GET /ws/news HTTP/1.0\r\n{GOOD}\r\n").as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), "bad_websocket_handshake");
    // And the server still upgrades a good one.
    open(&server, "/ws/news").await;
}

#[tokio::test]
async fn pings_are_answered_and_a_close_is_closed() {
    let server = TestServer::start();
    let mut socket = open(&server, "/ws/news").await;
    socket.send(0x89, b"are you there").await;
    assert_eq!(
        socket.next_frame().await,
        Some(Frame::Pong(b"are you there".to_vec()))
    );
    // An unsolicited pong is ignored; a ping in pieces is answered.
    socket.send(0x8a, b"").await;
    let ping = masked(0x89, b"slow");
    for byte in ping {
        socket.send_raw(&[byte]).await;
    }
    assert_eq!(
        socket.next_frame().await,
        Some(Frame::Pong(b"slow".to_vec()))
    );
    socket.send(0x88, &[0x0f, 0xa0, b'o', b'k']).await;
    assert_eq!(socket.rest().await, [Frame::Close(Some(4000))]);
}

#[tokio::test]
async fn frames_a_client_may_not_send_are_closed_with_their_codes() {
    let server = TestServer::start();
    let http = client();
    let long_ping = masked(0x89, &[0; 126]);
    let gigabyte_text = [0x81u8, 0xff, 0, 0, 0, 0, 0x40, 0, 0, 0];
    let cases: [(&str, Vec<u8>, u16); 8] = [
        ("a text frame", masked(0x81, b"hello"), 1003),
        ("a binary frame", masked(0x82, b"\x00"), 1003),
        ("a 1 GB length header", gigabyte_text.to_vec(), 1003),
        ("an unmasked ping", vec![0x89, 0x00], 1002),
        ("a fragmented ping", masked(0x09, b""), 1002),
        ("a ping over 125 bytes", long_ping, 1002),
        ("a reserved bit", masked(0xc9, b""), 1002),
        ("a reserved opcode", masked(0x83, b""), 1002),
    ];
    for (what, frame, code) in cases {
        let mut socket = open(&server, "/ws/news").await;
        socket.send_raw(&frame).await;
        assert_eq!(socket.rest().await, [Frame::Close(Some(code))], "{what}");
    }
    let mut socket = open(&server, "/ws/news").await;
    socket.send(0x88, &[0x03, 0xed]).await;
    assert_eq!(
        socket.rest().await,
        [Frame::Close(Some(1002))],
        "1005 may not be sent"
    );
    // The server goes on serving.
    let mut socket = open(&server, "/ws/news").await;
    let id = publish(&http, &server.base(), "news", "still here").await;
    assert_eq!(socket.next_item().await["id"], id);
}

/// A flood of pings is answered, pong by pong, without the connection
/// growing anything (a read's pongs are written before the next read), and
/// the stream goes on.
#[tokio::test]
async fn a_flood_of_pings_leaves_the_stream_serving() {
    let server = TestServer::start();
    let http = client();
    let mut socket = open(&server, "/ws/news").await;
    let mut flood = Vec::new();
    for i in 0..20_000u32 {
        flood.extend(masked(0x89, &i.to_be_bytes()));
    }
    socket.send_raw(&flood).await;
    for i in 0..20_000u32 {
        assert_eq!(
            socket.next_frame().await,
            Some(Frame::Pong(i.to_be_bytes().to_vec()))
        );
    }
    let id = publish(&http, &server.base(), "news", "after the flood").await;
    assert_eq!(socket.next_item().await["id"], id);
}

#[tokio::test]
async fn a_peer_that_answers_no_ping_is_disconnected() {
    let server = TestServer::builder()
        .config(|c| {
            c.heartbeat = Duration::from_millis(50);
            c.write_timeout = Duration::from_millis(300);
        })
        .start();
    // This peer reads, but never answers a ping.
    let mut silent = open(&server, "/ws/news").await;
    let frames = within("the silent peer to be disconnected", silent.rest()).await;
    assert!(
        frames.iter().any(|frame| matches!(frame, Frame::Ping(_))),
        "{frames:?}"
    );
    // One that answers stays.
    let mut answering = open(&server, "/ws/news").await;
    let mut pongs = 0;
    while pongs < 20 {
        match answering.next_frame().await {
            Some(Frame::Ping(payload)) => {
                answering.send(0x8a, &payload).await;
                pongs += 1;
            }
            Some(Frame::Text(_)) => {}
            other => panic!("the answering peer was dropped: {other:?}"),
        }
    }
}

#[tokio::test]
async fn shutdown_closes_with_1001_and_a_resume_with_since_is_exact() {
    let mut server = TestServer::start();
    let http = client();
    let mut socket = open(&server, "/ws/news").await;
    let first = publish(&http, &server.base(), "news", "before").await;
    assert_eq!(socket.next_item().await["id"], first);
    server.restart();
    let rest = within("the close", socket.rest()).await;
    assert_eq!(rest.last(), Some(&Frame::Close(Some(1001))), "{rest:?}");
    let second = publish(&http, &server.base(), "news", "after").await;
    let mut resumed = open(&server, &format!("/ws/news?since={}", encode(&first))).await;
    assert_eq!(resumed.next_item().await["id"], second);
}

#[tokio::test]
async fn a_third_party_client_receives_and_resumes() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let server = TestServer::start();
    let http = client();
    let url = format!("ws://{}/ws/news", server.address());
    let (mut socket, answer) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("the handshake");
    assert_eq!(answer.status(), 101);
    let mut ids = Vec::new();
    for data in ["one", "two"] {
        ids.push(publish(&http, &server.base(), "news", data).await);
    }
    let mut received = Vec::new();
    while received.len() < 2 {
        let frame = within("a frame", socket.next()).await.unwrap().unwrap();
        if let WsMessage::Text(text) = frame {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            if value.get("id").is_some() {
                received.push(value["id"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(received, ids);
    drop(socket);
    let third = publish(&http, &server.base(), "news", "three").await;
    let url = format!(
        "ws://{}/ws/news?since={}",
        server.address(),
        encode(&ids[1])
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    loop {
        let frame = within("a frame", socket.next()).await.unwrap().unwrap();
        if let WsMessage::Text(text) = frame
            && text.contains("\"id\"")
        {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["id"], third);
            break;
        }
    }
}

/// Origins are judged as on every route: a page of another origin is
/// refused (403, no upgrade) unless the policy names it.
#[tokio::test]
async fn a_page_of_a_foreign_origin_is_refused_unless_allowed() {
    let server = TestServer::builder()
        .config(|c| c.cors = comet_server::CorsPolicy::Origins(vec!["https://app.example".into()]))
        .start();
    let foreign = raw::exchange(
        server.address(),
        &handshake(
            "/ws/news",
            &format!("{GOOD}origin: https://evil.example\r\n"),
        ),
    )
    .await;
    assert_eq!(foreign.status, 403, "{}", foreign.head);
    assert_eq!(foreign.error_code(), "origin_not_allowed");
    RawWebSocket::connect_with(
        server.address(),
        "/ws/news",
        "origin: https://app.example\r\n",
    )
    .await;
}
