//! A subscriber that stops reading: the others do not wait for it, it holds
//! no unbounded queue, and its fate is explicit: when it reads again it is
//! told what it missed (a gap), or, stuck past the write timeout, it is
//! disconnected and resumes by id.

use std::time::Duration;

use comet_testkit::{SseStream, TestServer, client, publish, raw, within};

const SSE_REQUEST: &[u8] = b"GET /sse/slow HTTP/1.1\r\nhost: test\r\n\r\n";

fn payload(i: usize) -> String {
    format!("{i:05}:{}", "p".repeat(8 * 1024))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_holds_back_nobody_and_later_learns_of_its_gap() {
    let server = TestServer::builder()
        .keep_messages(50)
        .config(|c| c.write_timeout = Duration::from_secs(600))
        .start();
    let http = client();
    let stuck = raw::stuck_client(server.address(), SSE_REQUEST).await;
    let mut reader = SseStream::new(http.get(server.url("/sse/slow")).send().await.unwrap());
    reader.until_raw(b"retry:").await;

    // 3,000 messages of 8 KiB: far more than the stuck client's socket
    // buffers can absorb.
    const COUNT: usize = 3_000;
    let publisher = tokio::spawn({
        let http = http.clone();
        let base = server.base();
        async move {
            for i in 0..COUNT {
                publish(&http, &base, "slow", &payload(i)).await;
            }
        }
    });
    for i in 0..COUNT {
        let event = reader
            .next_event()
            .await
            .expect("the reading subscriber keeps up");
        assert_eq!(event.data[..5], format!("{i:05}"), "in order");
    }
    within(
        "the publisher, never blocked by the stuck subscriber",
        publisher,
    )
    .await
    .unwrap();

    // Now the stuck subscriber reads: what it gets is a prefix, then an
    // explicit gap, then the retained tail. Nothing is silently lost.
    let mut late = SseStream::from_body(raw::chunked_body(stuck).await);
    let mut seen = Vec::new();
    let mut gap_at = None;
    while seen.last().copied() != Some(COUNT - 1) {
        let event = late
            .next_event()
            .await
            .expect("the late reader is still served");
        if event.event == "comet-gap" {
            assert!(event.data.contains("\"reason\":\"trimmed\""));
            gap_at = Some(seen.len());
            continue;
        }
        seen.push(event.data[..5].parse::<usize>().unwrap());
    }
    let gap_at = gap_at.expect("the stuck subscriber is told it missed messages");
    let (before, after) = seen.split_at(gap_at);
    assert!(
        before.iter().copied().eq(0..before.len()),
        "before the gap: an unbroken prefix"
    );
    assert!(
        before.len() < COUNT - 50,
        "it really fell behind ({} read)",
        before.len()
    );
    assert!(
        after.iter().copied().eq(COUNT - 50..COUNT),
        "after the gap: exactly the 50 retained messages, in order"
    );
    let metrics = comet_testkit::metrics(&http, &server.base()).await;
    assert!(
        metrics.contains("comet_gaps_total{reason=\"trimmed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_stuck_past_the_write_timeout_is_disconnected() {
    let server = TestServer::builder()
        .config(|c| c.write_timeout = Duration::from_millis(300))
        .start();
    let http = client();
    let mut stuck = raw::stuck_client(server.address(), SSE_REQUEST).await;
    let metric = "comet_slow_consumer_actions_total{action=\"disconnected\"} 1";
    within("the stuck subscriber to be disconnected", async {
        let mut i = 0;
        loop {
            // Keep publishing until the server gives up on the stuck client.
            for _ in 0..50 {
                publish(&http, &server.base(), "slow", &payload(i)).await;
                i += 1;
            }
            if comet_testkit::metrics(&http, &server.base())
                .await
                .contains(metric)
            {
                return;
            }
        }
    })
    .await;
    assert!(
        raw::closes_within(&mut stuck, Duration::from_secs(10)).await,
        "the connection is closed"
    );
    // The server goes on serving.
    let answer = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
}
