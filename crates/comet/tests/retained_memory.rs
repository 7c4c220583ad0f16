//! A retained message costs about its own size, whichever way it came in:
//! its body must not keep the connection's read buffer alive. (A file of
//! its own: test binaries run one after another, and this one loads the
//! machine enough to disturb the timing of other tests run beside it.)

use std::path::Path;

use comet_testkit::{ServerProcess, raw};

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
