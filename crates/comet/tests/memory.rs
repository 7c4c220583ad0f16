//! A stalled subscriber cannot grow the server's memory: 20 clients that
//! never read stay connected while 150 MB are published through a channel
//! they follow; the server's resident memory grows by a small, bounded
//! amount (a per-subscriber queue would need gigabytes here). And a
//! retained message costs about its own size, whichever way it came in.

use std::path::Path;

use comet_testkit::{ServerProcess, SseStream, client, publish, raw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscribers_do_not_grow_memory() {
    let server = ServerProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_comet")),
        &[
            "--memory",
            "--retention-messages",
            "100",
            "--write-timeout",
            "1h",
        ],
    );
    let address = server.base().trim_start_matches("http://").parse().unwrap();
    let http = client();
    let big = "m".repeat(64 * 1024);
    // Warm up the allocator with the working set before measuring.
    for i in 0..200 {
        publish(&http, server.base(), "big", &format!("{i}{big}")).await;
    }
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(raw::stuck_client(address, b"GET /sse/big HTTP/1.1\r\nhost: x\r\n\r\n").await);
    }
    let mut reader = SseStream::new(
        http.get(format!("{}/sse/big", server.base()))
            .send()
            .await
            .unwrap(),
    );
    reader.until_raw(b"retry:").await;
    let before = server.resident_bytes();
    const COUNT: usize = 2_400;
    let publisher = tokio::spawn({
        let base = server.base().to_string();
        async move {
            let http = client();
            for i in 0..COUNT {
                publish(&http, &base, "big", &format!("{i}{big}")).await;
            }
        }
    });
    let mut peak = before;
    for i in 0..COUNT {
        let event = reader.next_event().await.expect("the reader keeps up");
        assert!(event.data.starts_with(&i.to_string()));
        if i % 100 == 0 {
            peak = peak.max(server.resident_bytes());
        }
    }
    publisher.await.unwrap();
    peak = peak.max(server.resident_bytes());
    let growth = peak.saturating_sub(before);
    eprintln!(
        "resident before {} MiB, peak {} MiB, growth {} MiB, with 150 MiB published past 20 stalled subscribers",
        before >> 20,
        peak >> 20,
        growth >> 20
    );
    assert!(growth < 64 << 20, "memory grew by {} MiB", growth >> 20);
    drop(stalled);
}

/// Publishes `count` messages of 100 bytes to `path` on one keep-alive
/// connection; returns the server's resident growth per message.
async fn growth_per_message(server: &ServerProcess, path: &str, count: usize) -> u64 {
    use tokio::io::AsyncWriteExt;
    let address = server.base().trim_start_matches("http://").parse().unwrap();
    let mut connection = raw::connect(address).await;
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{}",
        "d".repeat(100)
    );
    let before = server.resident_bytes();
    for _ in 0..count {
        connection.write_all(request.as_bytes()).await.unwrap();
        let answer = raw::read_response(&mut connection).await;
        assert_eq!(answer.status, 201, "{}", answer.head);
    }
    server.resident_bytes().saturating_sub(before) / count as u64
}

#[tokio::test]
async fn a_retained_message_costs_its_own_size_not_a_read_buffer() {
    let server = ServerProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_comet")),
        &["--memory", "--retention-messages", "100000"],
    );
    // The plain path is answered directly; the percent-encoded one (the
    // channel "routed") through hyper and the router. Both used to keep the
    // connection's whole read buffer alive in every retained message
    // (about 1.3 KB and 4.6 KB per 100-byte message); about 370 bytes is
    // what a message, its id and its index take.
    const COUNT: usize = 20_000;
    let direct = growth_per_message(&server, "/pub/direct", COUNT).await;
    let routed = growth_per_message(&server, "/pub/r%6Futed", COUNT).await;
    eprintln!(
        "resident growth per retained 100-byte message: direct {direct} B, router {routed} B"
    );
    assert!(direct < 1_000, "direct path: {direct} bytes per message");
    assert!(routed < 1_000, "router path: {routed} bytes per message");
}
