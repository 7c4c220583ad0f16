//! A stalled subscriber cannot grow the server's memory: 20 clients that
//! never read stay connected while 150 MB are published through a channel
//! they follow; the server's resident memory grows by a small, bounded
//! amount (a per-subscriber queue would need gigabytes here).

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
    // The publisher stays at most 50 messages ahead of the reader, well
    // inside the retention of 100, however slow the machine: the reader
    // must see every message, the stalled clients none.
    let (progress, mut read_so_far) = tokio::sync::watch::channel(0usize);
    let publisher = tokio::spawn({
        let base = server.base().to_string();
        async move {
            let http = client();
            for i in 0..COUNT {
                read_so_far
                    .wait_for(|&read| i < read + 50)
                    .await
                    .expect("the reader is alive");
                publish(&http, &base, "big", &format!("{i}{big}")).await;
            }
        }
    });
    let mut peak = before;
    for i in 0..COUNT {
        let event = reader.next_event().await.expect("the reader keeps up");
        assert!(event.data.starts_with(&i.to_string()));
        progress.send_replace(i + 1);
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

/// WebSocket clients that send what they may not cannot grow the server's
/// memory either: 40 flood it with pings and never read a pong (the server
/// stops reading once its pongs cannot be written), and 200 announce data
/// frames of a gigabyte (closed at the frame's first two bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_websocket_clients_do_not_grow_memory() {
    use comet_testkit::ws::{Frame, RawWebSocket, masked};
    let server = ServerProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_comet")),
        &["--memory", "--write-timeout", "1h"],
    );
    let address = server.base().trim_start_matches("http://").parse().unwrap();
    // Warm up the allocator with connections like the ones measured.
    for _ in 0..50 {
        RawWebSocket::connect(address, "/ws/news").await;
    }
    let before = server.resident_bytes();
    let pings: std::sync::Arc<Vec<u8>> = std::sync::Arc::new(
        (0..16_384)
            .flat_map(|_| masked(0x89, &[7u8; 125]))
            .collect(),
    );
    let mut flooders = Vec::new();
    for _ in 0..40 {
        let mut socket = RawWebSocket::connect(address, "/ws/news").await;
        let pings = pings.clone();
        flooders.push(tokio::spawn(async move {
            // 2 MB each; the send stalls once the server stops reading.
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(3), socket.send_raw(&pings))
                    .await;
            socket
        }));
    }
    for _ in 0..200 {
        let mut socket = RawWebSocket::connect(address, "/ws/news").await;
        socket
            .send_raw(&[0x81, 0xff, 0, 0, 0, 0, 0x40, 0, 0, 0])
            .await;
        let frames = socket.rest().await;
        assert_eq!(frames.last(), Some(&Frame::Close(Some(1003))), "{frames:?}");
    }
    let mut held = Vec::new();
    for flooder in flooders {
        held.push(flooder.await.unwrap());
    }
    let after = server.resident_bytes();
    let growth = after.saturating_sub(before);
    eprintln!(
        "resident before {} MiB, after {} MiB, with 80 MB of pings sent by 40 clients that read no pong",
        before >> 20,
        after >> 20
    );
    assert!(growth < 32 << 20, "memory grew by {} MiB", growth >> 20);
    // The server still serves.
    let http = client();
    let mut fresh = RawWebSocket::connect(address, "/ws/news").await;
    let id = publish(&http, server.base(), "news", "still serving").await;
    assert_eq!(fresh.next_item().await["id"], id);
    drop(held);
}
