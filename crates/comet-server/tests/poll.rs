//! `GET /poll/{channels}`: short polling and long polling.

use std::time::{Duration, Instant};

use comet_testkit::{
    TestServer, client, encode, publish, publish_numbered, wait_for_metric, within,
};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

async fn poll(server: &TestServer, path: &str) -> Value {
    let response = within("a poll", client().get(server.url(path)).send())
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

fn datas(answer: &Value) -> Vec<String> {
    answer["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_channel_that_never_had_a_message_answers_empty_with_a_cursor() {
    let server = TestServer::start();
    let answer = poll(&server, "/poll/never").await;
    assert_eq!(answer["messages"], serde_json::json!([]));
    assert!(answer["cursor"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(answer.get("gaps").is_none());
}

#[tokio::test]
async fn without_since_the_cursor_marks_now_and_backlog_is_delivered() {
    let server = TestServer::start();
    let http = client();
    publish_numbered(&http, &server.base(), "news", 5).await;
    let now = poll(&server, "/poll/news").await;
    assert!(datas(&now).is_empty(), "no backlog asked");
    let with_backlog = poll(&server, "/poll/news?backlog=2").await;
    assert_eq!(datas(&with_backlog), ["3", "4"]);
    assert_eq!(with_backlog["messages"][1]["channel"], "news");
    assert_eq!(with_backlog["messages"][1]["event"], "message");
    // Both cursors mark "now": the next message is all that follows.
    publish(&http, &server.base(), "news", "5").await;
    for cursor in [&now["cursor"], &with_backlog["cursor"]] {
        let next = poll(
            &server,
            &format!("/poll/news?since={}", encode(cursor.as_str().unwrap())),
        )
        .await;
        assert_eq!(datas(&next), ["5"]);
    }
}

#[tokio::test]
async fn the_cursor_of_a_single_channel_poll_is_the_last_message_id() {
    let server = TestServer::start();
    let http = client();
    let first = publish(&http, &server.base(), "news", "1").await;
    let second = publish(&http, &server.base(), "news", "2").await;
    let answer = poll(&server, &format!("/poll/news?since={}", encode(&first))).await;
    assert_eq!(datas(&answer), ["2"]);
    assert_eq!(answer["messages"][0]["id"], second.as_str());
    assert_eq!(answer["cursor"], second.as_str());
    let nothing = poll(&server, &format!("/poll/news?since={}", encode(&second))).await;
    assert!(datas(&nothing).is_empty());
    assert_eq!(
        nothing["cursor"],
        second.as_str(),
        "same cursor when nothing is new"
    );
}

#[tokio::test]
async fn long_answers_are_cut_by_size_and_the_cursor_continues_exactly() {
    let server = TestServer::builder()
        .config(|c| {
            c.max_poll_bytes = 10_000;
            c.batch_messages = 1000;
        })
        .start();
    let http = client();
    let big = "x".repeat(3000);
    for i in 0..10 {
        publish(&http, &server.base(), "news", &format!("{i}{big}")).await;
    }
    let mut received = Vec::new();
    let mut answer = poll(&server, "/poll/news?backlog=10").await;
    loop {
        let page = datas(&answer);
        assert!(
            page.len() <= 3,
            "three 3001-byte messages fit in 10,000 bytes, four do not"
        );
        if page.is_empty() {
            break;
        }
        received.extend(page.into_iter().map(|d| d[..1].to_string()));
        let cursor = answer["cursor"].as_str().unwrap().to_string();
        answer = poll(&server, &format!("/poll/news?since={}", encode(&cursor))).await;
    }
    let expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn a_long_poll_is_held_until_a_publish_releases_it() {
    let server = TestServer::start();
    let http = client();
    let cursor = poll(&server, "/poll/news").await["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let held = tokio::spawn({
        let url = server.url(&format!("/poll/news?wait=30&since={}", encode(&cursor)));
        let http = http.clone();
        async move {
            let started = Instant::now();
            let answer: Value = comet_testkit::get_json(&http, &url).await;
            (answer, started.elapsed())
        }
    });
    // Publish only once the poll is held (the server counts it).
    comet_testkit::wait_for_metric(
        &http,
        &server.base(),
        "comet_subscribers{transport=\"longpoll\"} 1",
    )
    .await;
    let id = publish(&http, &server.base(), "news", "released").await;
    let (answer, elapsed) = within("the released long poll", held).await.unwrap();
    assert_eq!(datas(&answer), ["released"]);
    assert_eq!(answer["cursor"], id.as_str());
    assert!(
        elapsed < Duration::from_secs(30),
        "answered before the wait ran out"
    );
}

#[tokio::test]
async fn a_long_poll_times_out_with_the_same_cursor() {
    let server = TestServer::start();
    let http = client();
    let id = publish(&http, &server.base(), "news", "old").await;
    let started = Instant::now();
    let answer = poll(
        &server,
        &format!("/poll/news?since={}&wait=0.3", encode(&id)),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "held for the wait"
    );
    assert!(datas(&answer).is_empty());
    assert_eq!(answer["cursor"], id.as_str());
}

#[tokio::test]
async fn a_long_poll_with_data_waiting_answers_at_once() {
    let server = TestServer::start();
    let http = client();
    let first = publish(&http, &server.base(), "news", "1").await;
    publish(&http, &server.base(), "news", "2").await;
    let started = Instant::now();
    let answer = poll(
        &server,
        &format!("/poll/news?since={}&wait=30", encode(&first)),
    )
    .await;
    assert_eq!(datas(&answer), ["2"]);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn wait_is_capped_by_the_server() {
    let server = TestServer::builder()
        .config(|c| c.max_wait = Duration::from_millis(200))
        .start();
    let started = Instant::now();
    let answer = poll(&server, "/poll/news?wait=3600").await;
    assert!(datas(&answer).is_empty());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(30),
        "held for the cap, not the hour asked: {elapsed:?}"
    );
}

#[tokio::test]
async fn several_channels_poll_with_one_cursor() {
    let server = TestServer::start();
    let http = client();
    let mut cursor = poll(&server, "/poll/a,b").await["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let mut expected = Vec::new();
    let mut received = Vec::new();
    for round in 0..5 {
        for channel in ["a", "b", "c"] {
            let data = format!("{channel}{round}");
            publish(&http, &server.base(), channel, &data).await;
            if channel != "c" {
                expected.push(data);
            }
        }
        let answer = poll(&server, &format!("/poll/b,a?since={}", encode(&cursor))).await;
        received.extend(datas(&answer));
        cursor = answer["cursor"].as_str().unwrap().to_string();
    }
    assert_eq!(received, expected);
}

#[tokio::test]
async fn a_trimmed_history_is_reported_in_a_gaps_field() {
    let server = TestServer::builder().keep_messages(2).start();
    let http = client();
    let first = publish(&http, &server.base(), "news", "0").await;
    for i in 1..6 {
        publish(&http, &server.base(), "news", &i.to_string()).await;
    }
    let answer = poll(&server, &format!("/poll/news?since={}", encode(&first))).await;
    assert_eq!(
        answer["gaps"],
        serde_json::json!([{"channel": "news", "reason": "trimmed"}])
    );
    assert_eq!(datas(&answer), ["4", "5"]);
    // From the returned cursor there is no gap any more.
    let next = poll(
        &server,
        &format!(
            "/poll/news?since={}",
            encode(answer["cursor"].as_str().unwrap())
        ),
    )
    .await;
    assert!(next.get("gaps").is_none());
}

#[tokio::test]
async fn a_cursor_from_another_history_reports_reset_and_delivers_what_is_retained() {
    let server = TestServer::start();
    let http = client();
    publish(&http, &server.base(), "news", "a").await;
    publish(&http, &server.base(), "news", "b").await;
    let answer = poll(&server, "/poll/news?since=zzzzzzzz-1").await;
    assert_eq!(
        answer["gaps"],
        serde_json::json!([{"channel": "news", "reason": "reset"}])
    );
    assert_eq!(datas(&answer), ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_long_polls_racing_a_fast_publisher_each_receive_everything_in_order() {
    let server = TestServer::start();
    comet_testkit::race_long_polls_against_a_publisher(&server.base(), "race", 40, 30).await;
}

/// A held long poll whose client goes away gives its place up at once,
/// not when its `wait` ends (the direct path watches the socket while the
/// poll is parked).
#[tokio::test]
async fn a_held_long_poll_whose_client_leaves_is_let_go_at_once() {
    let server = TestServer::start();
    let http = client();
    let mut stream = comet_testkit::raw::connect(server.address()).await;
    stream
        .write_all(b"GET /poll/gone?wait=60 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    wait_for_metric(
        &http,
        &server.base(),
        "comet_subscribers{transport=\"longpoll\"} 1",
    )
    .await;
    drop(stream);
    // Within the test kit's bound (20 s), far less than the 60 s wait.
    wait_for_metric(
        &http,
        &server.base(),
        "comet_subscribers{transport=\"longpoll\"} 0",
    )
    .await;
    assert!(
        comet_testkit::metrics(&http, &server.base())
            .await
            .contains("comet_followed_channels 0")
    );
}
