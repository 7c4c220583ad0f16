//! Subscribers that ask for a large backlog and never read cannot pin the
//! backlog in memory, once each: on the default (durable) store, with 1 MiB
//! messages, five of them stay within a few MiB together. (Before, each
//! subscription loaded its whole backlog when it opened, into private
//! copies: about 120 MiB each here.)

use std::path::Path;
use std::time::Duration;

use comet_testkit::{ServerProcess, client, publish, raw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscribers_with_a_large_backlog_hold_almost_nothing() {
    const MESSAGES: usize = 120;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("backlog-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = ServerProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_comet")),
        &[
            "--data-dir",
            dir.to_str().unwrap(),
            "--max-body",
            "2MiB",
            "--write-timeout",
            "1h",
        ],
    );
    let address = server.address().parse().unwrap();
    let http = client();
    let big = "m".repeat(1 << 20);
    for i in 0..MESSAGES {
        publish(&http, server.base(), "big", &format!("{i:04}{big}")).await;
    }
    // Let the store and allocator settle before measuring.
    let before = settled_resident(&server).await;
    let request = format!("GET /sse/big?backlog={MESSAGES} HTTP/1.1\r\nhost: x\r\n\r\n");
    let mut stalled = Vec::new();
    for _ in 0..5 {
        stalled.push(raw::stuck_client(address, request.as_bytes()).await);
    }
    // Whatever the subscriptions take, they take it as they open and
    // start writing: the peak over the next seconds.
    let mut peak = before;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(server.resident_bytes());
    }
    let growth = peak.saturating_sub(before);
    eprintln!(
        "resident before {} MiB, peak {} MiB, growth {} MiB with 5 stalled subscribers of a {MESSAGES} MiB backlog",
        before >> 20,
        peak >> 20,
        growth >> 20
    );
    assert!(growth < 48 << 20, "memory grew by {} MiB", growth >> 20);
    drop(stalled);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The resident size once it stops moving by more than a MiB (bounded).
async fn settled_resident(server: &ServerProcess) -> u64 {
    let mut last = server.resident_bytes();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = server.resident_bytes();
        if now.abs_diff(last) < 1 << 20 {
            return now;
        }
        last = now;
    }
    last
}
