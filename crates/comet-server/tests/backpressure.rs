//! Publish back-pressure: a publish is stored and delivered at once, and its
//! answer waits while a live subscriber of its channel is more than
//! `max_lag` messages behind, comes as soon as that subscriber reads, and waits at
//! most once for a subscriber that stays stuck. Nothing is lost either way.

use std::time::Duration;

use comet_hub::PaceConfig;
use comet_testkit::{
    SseStream, TestServer, client, metric_value, metrics, publish, raw, wait_for_metric, within,
};

const SSE_REQUEST: &[u8] = b"GET /sse/paced HTTP/1.1\r\nhost: test\r\n\r\n";

/// 64 KiB: a stuck client's socket buffers fill after a few dozen.
fn payload(i: usize) -> String {
    format!("{i:05}:{}", "p".repeat(64 * 1024))
}

/// Reads the messages numbered `numbers` from `reader`, each in order.
async fn expect_in_order(reader: &mut SseStream, numbers: std::ops::Range<usize>) {
    for i in numbers {
        let event = reader.next_event().await.expect("every message");
        assert_eq!(event.data[..5], format!("{i:05}"), "in order");
    }
}

/// A server whose publishes wait while a live subscriber is 4 behind, at
/// most `max_wait`, and a subscriber on `paced` that reads nothing (its
/// socket fills), once the server counts it.
async fn paced_server_with_a_stuck_subscriber(
    max_wait: Duration,
) -> (TestServer, reqwest::Client, tokio::net::TcpStream) {
    let server = TestServer::builder()
        .pace(PaceConfig {
            max_lag: 4,
            max_wait,
        })
        .config(|c| c.write_timeout = Duration::from_secs(600))
        .start();
    let http = client();
    let stuck = raw::stuck_client(server.address(), SSE_REQUEST).await;
    wait_for_metric(
        &http,
        &server.base(),
        "comet_subscribers{transport=\"sse\"} 1",
    )
    .await;
    (server, http, stuck)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_waits_for_a_stalled_live_subscriber_and_goes_on_once_it_reads() {
    let (server, http, stuck) = paced_server_with_a_stuck_subscriber(Duration::from_secs(60)).await;

    // Publish until one publish is held: the subscriber's socket is full,
    // it reads nothing more from the hub, and falls four behind.
    let (last, publishing) = publish_until_one_is_held(&server, false).await;

    // The subscriber reads: the held publish goes on long before its
    // longest wait, and the subscriber gets every message, in order.
    let mut reader = SseStream::from_body(raw::chunked_body(stuck).await);
    expect_in_order(&mut reader, 0..last + 1).await;
    within("the held publish, once the subscriber reads", publishing)
        .await
        .unwrap();
    let figures = metrics(&http, &server.base()).await;
    assert!(metric_value(&figures, "comet_publish_waits_total") >= 1);
    assert_eq!(
        metric_value(&figures, "comet_publish_wait_timeouts_total"),
        0,
        "released by the reader, not by the clock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_stuck_past_the_longest_wait_is_waited_for_once_until_it_catches_up() {
    let (server, http, stuck) =
        paced_server_with_a_stuck_subscriber(Duration::from_millis(300)).await;
    // Publishes from a client of their own, so that they take the direct
    // path (see `publish_until_one_is_held`).
    let publisher = client();
    let publish_range = |range: std::ops::Range<usize>| {
        let http = publisher.clone();
        let base = server.base();
        async move {
            within("publishing past a stuck subscriber", async {
                for i in range {
                    publish(&http, &base, "paced", &payload(i)).await;
                }
            })
            .await;
        }
    };
    let waits = || async {
        let figures = metrics(&http, &server.base()).await;
        (
            metric_value(&figures, "comet_publish_waits_total"),
            metric_value(&figures, "comet_publish_wait_timeouts_total"),
        )
    };
    // Publish until a publish waits its longest for it and the server gives
    // up on it. (A wait before that may end without the clock: while the
    // kernel grows the connection's buffers, the server can still write.)
    let mut next = 0;
    let waits_until_given_up = loop {
        publish_range(next..next + 1).await;
        next += 1;
        let (waits, timeouts) = waits().await;
        if timeouts > 0 {
            assert_eq!(timeouts, 1);
            break waits;
        }
        assert!(next < 200, "a stuck subscriber is never given up on");
    };
    // The rest, far more than its socket holds, fewer than the live
    // window: none of them waits for it.
    publish_range(next..200).await;
    assert_eq!(
        waits().await,
        (waits_until_given_up, 1),
        "waited for once, then given up on"
    );

    // It reads some: more than its sockets held, so the server has read
    // more for it from the live window, but it has not caught up, so it
    // still holds nothing back.
    let mut late = SseStream::from_body(raw::chunked_body(stuck).await);
    expect_in_order(&mut late, 0..60).await;
    publish_range(200..240).await;
    assert_eq!(
        waits().await,
        (waits_until_given_up, 1),
        "no more waits for it"
    );

    // It gets everything, in order.
    expect_in_order(&mut late, 60..240).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_publish_is_delivered_to_the_others_before_its_answer() {
    a_held_publish_is_delivered_before_its_answer(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_batch_is_delivered_to_the_others_before_its_answer() {
    a_held_publish_is_delivered_before_its_answer(true).await;
}

/// Publishes (one message, or a batch of one with `batch`) until one is
/// held by a stuck subscriber, and looks at what another subscriber, one
/// that reads everything, has received meanwhile.
async fn a_held_publish_is_delivered_before_its_answer(batch: bool) {
    let (server, http, stuck) = paced_server_with_a_stuck_subscriber(Duration::from_secs(60)).await;
    let response = http
        .get(format!("{}/sse/paced", server.base()))
        .send()
        .await
        .unwrap();
    let (seen, mut seen_now) = tokio::sync::watch::channel(None::<usize>);
    tokio::spawn(async move {
        let mut reader = SseStream::new(response);
        while let Some(event) = reader.next_event().await {
            if let Ok(i) = event.data[..5].parse::<usize>() {
                seen.send_replace(Some(i));
            }
        }
    });
    wait_for_metric(
        &http,
        &server.base(),
        "comet_subscribers{transport=\"sse\"} 2",
    )
    .await;

    let (last, publishing) = publish_until_one_is_held(&server, batch).await;

    // Its message is stored and goes out at once: only the answer waits.
    within(
        "the held publish's message at the subscriber that reads",
        seen_now.wait_for(|seen| *seen == Some(last)),
    )
    .await
    .unwrap();
    assert!(!publishing.is_finished(), "the answer still waits");

    // The stuck subscriber reads: the answer comes.
    let mut reader = SseStream::from_body(raw::chunked_body(stuck).await);
    expect_in_order(&mut reader, 0..last + 1).await;
    within("the held publish's answer", publishing)
        .await
        .unwrap();
}

/// Publishes to `paced` (each message alone, or with `batch` as a batch of
/// one) until a publish's answer has not come within a second: its number,
/// and its answer still to come. The publishes come from a client of their
/// own: a connection that asked the router anything (the metrics) stays
/// with it, and single publishes are to take the direct path.
async fn publish_until_one_is_held(
    server: &TestServer,
    batch: bool,
) -> (usize, tokio::task::JoinHandle<()>) {
    let http = client();
    for i in 0..2_000 {
        let publishing = tokio::spawn({
            let http = http.clone();
            let base = server.base();
            async move {
                if batch {
                    let body = serde_json::json!({
                        "messages": [{"channel": "paced", "data": payload(i)}]
                    });
                    let answer = http.post(format!("{base}/pub")).json(&body).send();
                    assert_eq!(answer.await.unwrap().status(), 201);
                } else {
                    publish(&http, &base, "paced", &payload(i)).await;
                }
            }
        });
        let answered = tokio::time::timeout(Duration::from_secs(1), async {
            while !publishing.is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        if answered.is_err() {
            return (i, publishing);
        }
    }
    panic!("no publish waited for the stalled subscriber");
}
