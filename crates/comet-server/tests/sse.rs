//! `GET /sse/{channels}` against the real server: headers, byte-exact
//! framing, ids and resume, heartbeats, gaps.

use comet_testkit::{
    SseStream, TestServer, client, encode, publish, publish_event, publish_numbered,
};

async fn open(server: &TestServer, path: &str) -> SseStream {
    let response = client().get(server.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    SseStream::new(response)
}

async fn open_with_header(server: &TestServer, path: &str, last_event_id: &str) -> SseStream {
    let response = client()
        .get(server.url(path))
        .header("Last-Event-ID", last_event_id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    SseStream::new(response)
}

#[tokio::test]
async fn the_stream_has_the_contract_headers_and_opens_with_retry() {
    let server = TestServer::builder()
        .config(|c| c.sse_retry = std::time::Duration::from_millis(1234))
        .start();
    let response = client().get(server.url("/sse/news")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    let mut stream = SseStream::new(response);
    let cursor = stream
        .opening_id()
        .await
        .expect("the opening names the starting cursor");
    assert_eq!(
        stream.raw,
        format!("retry: 1234\nid: {cursor}\n\n").as_bytes()
    );
    assert!(
        cursor.contains('-') && !cursor.contains('/'),
        "a cursor: {cursor}"
    );
    // It sets the client's last event id without dispatching an event: the
    // next event is the first message.
    comet_testkit::publish(&client(), &server.base(), "news", "first").await;
    let first = stream.next_event().await.unwrap();
    assert_eq!(first.data, "first");
    assert_eq!(stream.comments, 0);
}

#[tokio::test]
async fn messages_are_framed_byte_for_byte() {
    let server = TestServer::start();
    let http = client();
    let mut stream = open(&server, "/sse/news").await;
    stream.until_raw(b"\n\n").await;
    let opening = stream.raw.clone();
    let cases: [(Option<&str>, &str, String); 9] = [
        (None, "plain", "data: plain\n".into()),
        (None, "a\nb", "data: a\ndata: b\n".into()),
        (None, "a\rb", "data: a\ndata: b\n".into()),
        (None, "a\r\nb", "data: a\ndata: b\n".into()),
        (None, "trailing\n", "data: trailing\ndata:\n".into()),
        (None, "", "data:\n".into()),
        (None, "  two spaces", "data:   two spaces\n".into()),
        (
            Some("price-update"),
            "{\"p\":1}",
            "event: price-update\ndata: {\"p\":1}\n".into(),
        ),
        (Some("message"), "ünï ✓", "data: ünï ✓\n".into()),
    ];
    let mut expected = opening;
    for (event, data, frame) in &cases {
        let id = publish_event(&http, &server.base(), "news", *event, data).await;
        expected.extend_from_slice(format!("id: {id}\n{frame}\n").as_bytes());
    }
    stream
        .until_raw(b"data: \xc3\xbcn\xc3\xaf \xe2\x9c\x93\n\n")
        .await;
    assert_eq!(
        String::from_utf8_lossy(&stream.raw),
        String::from_utf8_lossy(&expected)
    );
}

#[tokio::test]
async fn a_standard_parser_reads_back_the_data_with_lf_line_ends() {
    let server = TestServer::start();
    let http = client();
    let mut stream = open(&server, "/sse/news").await;
    let datas = ["a\nb", "a\rb", "a\r\nb", "x\n", "", "\n\n", "end"];
    let mut ids = Vec::new();
    for data in datas {
        ids.push(publish(&http, &server.base(), "news", data).await);
    }
    let events = stream.events(datas.len()).await;
    let received: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(received, ["a\nb", "a\nb", "a\nb", "x\n", "", "\n\n", "end"]);
    let received_ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(received_ids, ids);
    assert!(events.iter().all(|e| e.event == "message"));
}

/// Page code cannot see comments, so a client that must notice a silent
/// stream asks for heartbeats as events of the reserved type.
#[tokio::test]
async fn heartbeats_come_as_events_when_asked() {
    let server = TestServer::builder()
        .config(|c| c.heartbeat = std::time::Duration::from_millis(30))
        .start();
    let mut stream = open(&server, "/sse/news?heartbeat=event").await;
    let event = stream.next_event().await.unwrap();
    assert_eq!(
        (event.event.as_str(), event.data.as_str()),
        ("comet-heartbeat", "heartbeat")
    );
    assert!(!stream.raw.windows(12).any(|w| w == b": heartbeat"));
    let refused = client()
        .get(server.url("/sse/news?heartbeat=loud"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "invalid_heartbeat");
}

#[tokio::test]
async fn heartbeats_are_lone_comment_lines_that_dispatch_nothing() {
    let server = TestServer::builder()
        .config(|c| c.heartbeat = std::time::Duration::from_millis(30))
        .start();
    let http = client();
    let mut stream = open(&server, "/sse/news").await;
    stream
        .until_raw(b": heartbeat\n: heartbeat\n: heartbeat\n")
        .await;
    assert!(
        !stream.raw.windows(13).any(|w| w == b": heartbeat\n\n"),
        "a heartbeat is never followed by a blank line"
    );
    let id = publish(&http, &server.base(), "news", "after").await;
    let event = stream.next_event().await.unwrap();
    assert_eq!(
        (event.data.as_str(), event.id.as_str()),
        ("after", id.as_str())
    );
    assert!(stream.comments >= 3);
}

#[tokio::test]
async fn resume_point_precedence_is_header_then_last_event_id_then_since() {
    let server = TestServer::start();
    let http = client();
    let ids = publish_numbered(&http, &server.base(), "news", 4).await;
    let both = format!(
        "/sse/news?since={}&lastEventId={}",
        encode(&ids[0]),
        encode(&ids[1])
    );
    let mut by_header = open_with_header(&server, &both, &ids[2]).await;
    assert_eq!(by_header.next_event().await.unwrap().data, "3");
    let mut by_query = open(&server, &both).await;
    assert_eq!(by_query.next_event().await.unwrap().data, "2");
    let mut by_since = open(&server, &format!("/sse/news?since={}", encode(&ids[0]))).await;
    assert_eq!(by_since.next_event().await.unwrap().data, "1");
}

#[tokio::test]
async fn a_reconnect_before_the_first_message_loses_nothing() {
    let server = TestServer::start();
    let http = client();
    // Connect, learn the starting id from the opening, hang up.
    let mut first = open(&server, "/sse/news").await;
    let starting_id = first.opening_id().await.expect("a starting id");
    drop(first);
    publish(&http, &server.base(), "news", "while away").await;
    // Reconnect the way EventSource does: with that id.
    let mut again = open_with_header(&server, "/sse/news", &starting_id).await;
    assert_eq!(again.next_event().await.unwrap().data, "while away");
}

#[tokio::test]
async fn with_a_backlog_the_opening_names_no_id() {
    let server = TestServer::start();
    let http = client();
    publish(&http, &server.base(), "news", "old").await;
    let mut stream = open(&server, "/sse/news?backlog=1").await;
    stream.until_raw(b"\n\n").await;
    assert_eq!(stream.raw, b"retry: 3000\n\n");
    assert_eq!(stream.next_event().await.unwrap().data, "old");
}

#[tokio::test]
async fn backlog_delivers_the_newest_retained_messages_first() {
    let server = TestServer::start();
    let http = client();
    publish_numbered(&http, &server.base(), "news", 10).await;
    let mut stream = open(&server, "/sse/news?backlog=3").await;
    let datas: Vec<String> = stream.events(3).await.into_iter().map(|e| e.data).collect();
    assert_eq!(datas, ["7", "8", "9"]);
}

#[tokio::test]
async fn several_channels_share_one_stream_and_one_cursor() {
    let server = TestServer::start();
    let http = client();
    let mut stream = open(&server, "/sse/sport,news").await;
    let mut published = Vec::new();
    for i in 0..10 {
        let channel = ["news", "sport", "weather"][i % 3];
        let id = publish(&http, &server.base(), channel, &format!("{channel}{i}")).await;
        published.push((channel, id, format!("{channel}{i}")));
    }
    let wanted: Vec<_> = published
        .iter()
        .filter(|(c, _, _)| *c != "weather")
        .collect();
    let events = stream.events(wanted.len()).await;
    for (event, (channel, id, data)) in events.iter().zip(&wanted) {
        assert_eq!((&event.data, &event.id), (data, id));
        assert!(
            event.id.ends_with(&format!("/{channel}")),
            "a message id names its channel: {}",
            event.id
        );
    }
    // Reconnecting from the third event's id resumes exactly after it.
    let mut resumed = open_with_header(&server, "/sse/news,sport", &events[2].id).await;
    let rest = resumed.events(wanted.len() - 3).await;
    let rest: Vec<&str> = rest.iter().map(|e| e.data.as_str()).collect();
    let expected: Vec<&str> = wanted[3..].iter().map(|(_, _, d)| d.as_str()).collect();
    assert_eq!(rest, expected);
}

#[tokio::test]
async fn resuming_before_the_retained_history_starts_with_a_gap_event() {
    let server = TestServer::builder().keep_messages(3).start();
    let http = client();
    let ids = publish_numbered(&http, &server.base(), "news", 10).await;
    let mut stream = open_with_header(&server, "/sse/news", &ids[1]).await;
    let events = stream.events(4).await;
    assert_eq!(events[0].event, "comet-gap");
    let gap: serde_json::Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(
        gap,
        serde_json::json!({"channel": "news", "reason": "trimmed"})
    );
    let gap_frame = "event: comet-gap\ndata: {\"channel\":\"news\",\"reason\":\"trimmed\"}\n\n";
    let raw = String::from_utf8_lossy(&stream.raw);
    assert!(
        raw.contains(&format!("\n\n{gap_frame}")),
        "the gap event carries no id of its own: {raw:?}"
    );
    let datas: Vec<&str> = events[1..].iter().map(|e| e.data.as_str()).collect();
    assert_eq!(datas, ["7", "8", "9"]);
}

#[tokio::test]
async fn an_id_from_another_history_is_a_reset_gap() {
    let server = TestServer::start();
    let http = client();
    publish(&http, &server.base(), "news", "current").await;
    // An id of the same shape from a different epoch, as after a wiped store.
    let mut stream = open_with_header(&server, "/sse/news", "zzzzzzzz-5").await;
    let events = stream.events(2).await;
    assert_eq!(events[0].event, "comet-gap");
    assert!(events[0].data.contains("\"reason\":\"reset\""));
    assert_eq!(events[1].data, "current");
}
