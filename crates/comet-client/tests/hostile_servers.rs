//! The client against servers written to misbehave: each is a bare TCP
//! listener that answers as a test script says, and records what the client
//! sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use comet_client::{Error, EventSource, EventSourceOptions, ParserLimits, Reconnect, SseEvent};
use comet_protocol::sse::ParseError;
use comet_testkit::within;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

/// What a hostile server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    last_event_ids: Mutex<Vec<Option<String>>>,
    /// Each request's first line, and when it arrived.
    requests: Mutex<Vec<(String, Instant)>>,
    arrived: Notify,
}

impl Seen {
    /// Waits until `count` connections arrived.
    async fn wait_for(&self, count: usize) {
        within("connections", async {
            loop {
                let arrived = self.arrived.notified();
                if self.connections.load(Ordering::SeqCst) >= count {
                    return;
                }
                arrived.await;
            }
        })
        .await;
    }
}

/// Starts a server; `script(n, stream)` plays connection number `n`.
async fn hostile<F, Fut>(script: F) -> (String, Arc<Seen>)
where
    F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let recorded = seen.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let n = recorded.connections.fetch_add(1, Ordering::SeqCst);
            let head = read_head(&mut stream).await;
            let last_event_id = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("last-event-id")
                    .then(|| value.trim().to_string())
            });
            recorded.last_event_ids.lock().unwrap().push(last_event_id);
            let request_line = head.lines().next().unwrap_or_default().to_string();
            recorded
                .requests
                .lock()
                .unwrap()
                .push((request_line, Instant::now()));
            recorded.arrived.notify_waiters();
            let script = script.clone();
            tokio::spawn(async move { script(n, stream).await });
        }
    });
    (url, seen)
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn source(url: &str, reconnect: Reconnect, limits: ParserLimits) -> EventSource {
    EventSource::new(
        reqwest::Client::new(),
        url.parse().unwrap(),
        EventSourceOptions {
            last_event_id: None,
            token: None,
            limits,
            reconnect,
        },
    )
}

fn quick() -> Reconnect {
    Reconnect {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
        open_timeout: Duration::from_millis(300),
        idle_timeout: None,
    }
}

#[tokio::test]
async fn a_connection_dropped_mid_event_resumes_from_the_last_complete_one() {
    let (url, seen) = hostile(|n, mut stream| async move {
        let body = match n {
            0 => "retry: 10\n\nid: 1\ndata: first\n\nid: 2\ndata: sec",
            1 => "id: 2\ndata: second\n\n",
            _ => {
                let _ = stream
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
                return;
            }
        };
        let _ = stream
            .write_all(format!("{SSE_HEAD}{body}").as_bytes())
            .await;
    })
    .await;
    let mut events = source(&url, quick(), ParserLimits::default());
    let mut received = Vec::new();
    while let Some(event) = within("events", events.next()).await {
        let SseEvent {
            data,
            last_event_id,
            ..
        } = event.expect("no error");
        received.push((data, last_event_id));
    }
    assert_eq!(
        received,
        [("first".into(), "1".into()), ("second".into(), "2".into())],
        "the cut event was dropped, then received whole, once"
    );
    assert_eq!(
        *seen.last_event_ids.lock().unwrap(),
        [None, Some("1".into()), Some("2".into())],
        "each reconnection resumed from the last complete event"
    );
}

#[tokio::test]
async fn a_204_ends_the_stream_without_an_error() {
    let (url, seen) = hostile(|_, mut stream| async move {
        let _ = stream
            .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
            .await;
    })
    .await;
    let mut events = source(&url, quick(), ParserLimits::default());
    assert!(within("the end", events.next()).await.is_none());
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        1,
        "no reconnection"
    );
}

#[tokio::test]
async fn a_wrong_content_type_is_a_clear_error() {
    let (url, seen) = hostile(|_, mut stream| async move {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 2\r\n\r\nhi")
            .await;
    })
    .await;
    let mut events = source(&url, quick(), ParserLimits::default());
    let error = within("the error", events.next())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&error, Error::ContentType { found, .. } if found == "text/html"),
        "{error}"
    );
    assert!(within("the end", events.next()).await.is_none());
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refusal_is_a_clear_error() {
    let (url, _) = hostile(|_, mut stream| async move {
        let body = r#"{"error":"forbidden","message":"not for you"}"#;
        let _ = stream
            .write_all(
                format!(
                    "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
    })
    .await;
    let mut events = source(&url, quick(), ParserLimits::default());
    let error = within("the error", events.next())
        .await
        .unwrap()
        .unwrap_err();
    match &error {
        Error::Status {
            status: 403,
            code: Some(code),
            message,
        } => {
            assert_eq!(code, "forbidden");
            assert_eq!(message, "not for you");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(error.to_string().contains("not for you"));
}

#[tokio::test]
async fn a_line_of_100_mb_is_refused_without_buffering_it() {
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    let (url, _) = hostile(move |_, mut stream| {
        let counter = counter.clone();
        async move {
            let _ = stream
                .write_all(format!("{SSE_HEAD}data: ").as_bytes())
                .await;
            let block = vec![b'a'; 64 * 1024];
            for _ in 0..(100 * 1024 * 1024 / block.len()) {
                if stream.write_all(&block).await.is_err() {
                    return;
                }
                counter.fetch_add(block.len(), Ordering::SeqCst);
            }
        }
    })
    .await;
    let mut events = source(&url, quick(), ParserLimits::default());
    let error = within("the error", events.next())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(error, Error::Parse(ParseError::LineTooLong { limit }) if limit == 1 << 20),
        "{error}"
    );
    assert!(within("the end", events.next()).await.is_none());
    drop(events);
    let sent = written.load(Ordering::SeqCst);
    assert!(
        sent < 32 * 1024 * 1024,
        "the client stopped reading early ({} MiB of 100 written)",
        sent >> 20
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_retried_with_backoff() {
    let (url, seen) = hostile(|_, stream| async move {
        // Accept, read the request, say nothing, keep the socket open.
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(stream);
    })
    .await;
    let backing_off = Reconnect {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
        open_timeout: Duration::from_millis(100),
        idle_timeout: None,
    };
    let mut events = source(&url, backing_off, ParserLimits::default());
    tokio::select! {
        // Nothing is ever yielded while the server says nothing: no
        // event, no error.
        item = events.next() => panic!("unexpected item {item:?}"),
        () = seen.wait_for(4) => {}
    }
    // Each wait doubles (jitter adds at most half): the gaps between
    // attempts grow, where a client without backoff would hammer.
    let arrivals: Vec<Instant> = seen.requests.lock().unwrap().iter().map(|r| r.1).collect();
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= Duration::from_millis(300), "{gaps:?}");
    assert!(gaps[1] > gaps[0] && gaps[2] > gaps[1], "{gaps:?}");
}

/// A proxy's 502 while the server restarts, then the server's own 503
/// while it is full: both are retried, and the stream that finally opens
/// is read.
#[tokio::test]
async fn transient_server_errors_are_retried_until_the_stream_opens() {
    let (url, seen) = hostile(|n, mut stream| async move {
        let answer = match n {
            0 => "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: 9\r\nconnection: close\r\n\r\nno server".to_string(),
            1 => {
                let body = r#"{"error":"too_many_subscribers","message":"full"}"#;
                format!(
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            }
            _ => format!("{SSE_HEAD}id: 1\ndata: hello\n\n"),
        };
        let _ = stream.write_all(answer.as_bytes()).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let mut events = source(&url, quick(), ParserLimits::default());
    let event = within("the event", events.next())
        .await
        .unwrap()
        .expect("the error statuses were retried");
    assert_eq!(event.data, "hello");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
}

/// An NDJSON subscription that asked for a backlog and dropped before its
/// first line has delivered nothing: it asks for the backlog again rather
/// than resuming from "now" (which would skip it).
#[tokio::test]
async fn a_stream_dropped_before_its_first_line_asks_for_the_backlog_again() {
    let (url, seen) = hostile(|n, mut stream| async move {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\nconnection: close\r\n\r\n";
        let body = if n == 0 {
            "{\"heartbeat\":true}\n"
        } else {
            "{\"heartbeat\":true}\n{\"id\":\"e-3/news\",\"channel\":\"news\",\"event\":\"message\",\"data\":\"old\"}\n"
        };
        let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
        if n > 0 {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    })
    .await;
    let base = url.trim_end_matches("/events");
    let client = comet_client::Client::new(base).unwrap();
    let options = comet_client::SubscribeOptions {
        transport: comet_client::Transport::Stream,
        backlog: Some(5),
        reconnect: quick(),
        ..comet_client::SubscribeOptions::default()
    };
    let mut subscription = client.subscribe(&["news"], options).await.unwrap();
    let item = within("the backlog's message", subscription.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&item, comet_client::Item::Message(m) if m.data == "old"),
        "{item:?}"
    );
    let requests = seen.requests.lock().unwrap();
    assert!(requests.len() >= 2, "{:?}", requests.len());
    for (line, _) in requests.iter() {
        assert!(line.contains("backlog=5"), "{line}");
    }
}

/// A publish to a server that never answers fails in bounded time.
#[tokio::test]
async fn a_publish_that_gets_no_answer_times_out() {
    let (url, _) = hostile(|_, stream| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(stream);
    })
    .await;
    let client = comet_client::Client::new(url.trim_end_matches("/events"))
        .unwrap()
        .with_publish_timeout(Duration::from_millis(300));
    let published = within("the publish", client.publish("news", "hello")).await;
    assert!(
        matches!(published, Err(Error::Timeout(limit)) if limit == Duration::from_millis(300)),
        "{published:?}"
    );
}

#[tokio::test]
async fn the_servers_retry_sets_the_reconnection_time() {
    let (url, seen) = hostile(|n, mut stream| async move {
        let body = if n == 0 { "retry: 50\nid: 9\n\n" } else { "" };
        let _ = stream
            .write_all(format!("{SSE_HEAD}{body}").as_bytes())
            .await;
    })
    .await;
    // Without the server's retry, the client would wait ten minutes.
    let slow = Reconnect {
        initial: Duration::from_secs(600),
        ..quick()
    };
    let mut events = source(&url, slow, ParserLimits::default());
    let reader = tokio::spawn(async move { events.next().await.map(|_| ()) });
    seen.wait_for(2).await;
    assert_eq!(
        seen.last_event_ids.lock().unwrap()[1].as_deref(),
        Some("9"),
        "an id set without an event is still sent back"
    );
    reader.abort();
}
