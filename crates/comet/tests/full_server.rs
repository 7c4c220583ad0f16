//! A server full of subscribers still serves publishers and health checks:
//! `comet serve` raises its open-files limit at start, derives its caps
//! from it, and refuses subscriptions (never publishes) beyond them.

use std::path::Path;
use std::process::{Command, Stdio};

use comet_server::ConnectionLimits;
use comet_testkit::{ServerProcess, client, metric_value, metrics, raw, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_comet"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_default_limits_full_of_subscribers_still_takes_publishes() {
    const SOFT: u64 = 300;
    const HARD: u64 = 600;
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("full-server-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let log = dir.with_extension("log");
    // Started as a shell would start it: a low soft limit under a higher
    // hard one, and every other option left at its default.
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--nofile={SOFT}:{HARD}"))
        .arg(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("COMET_LOG", "info")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    let server = ServerProcess::spawn_command(command);
    let base = server.base().to_string();
    let http = client();

    // The soft limit was raised to the hard one, and the caps fit it.
    let expected = ConnectionLimits::for_open_files(HARD);
    let text = metrics(&http, &base).await;
    assert_eq!(
        metric_value(&text, "comet_connection_limit"),
        expected.max_connections as u64
    );
    assert_eq!(
        metric_value(&text, "comet_subscriber_limit"),
        expected.max_subscribers as u64
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("connection limits")
            && logged.contains(&format!("max_subscribers={}", expected.max_subscribers))
            && logged.contains(&format!("raised_from={SOFT}")),
        "{logged}"
    );

    // Fill every subscriber place (more than the soft limit found at start
    // would have allowed connections).
    let mut subscribers = Vec::with_capacity(expected.max_subscribers);
    for _ in 0..expected.max_subscribers {
        let mut stream = raw::connect(server.address().parse().unwrap()).await;
        stream
            .write_all(b"GET /sse/full HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        within("a stream's answer", stream.read_exact(&mut head))
            .await
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        subscribers.push(stream);
    }
    assert!(expected.max_subscribers as u64 > SOFT);

    // One more subscriber is refused, clearly.
    let refused = raw::exchange(
        server.address().parse().unwrap(),
        b"GET /sse/full HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.error_code(), "too_many_subscribers");

    // Publishing and health checks go on, and every subscriber counts.
    let published = http
        .post(format!("{base}/pub/full"))
        .body("still here")
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 201);
    let answer: serde_json::Value = published.json().await.unwrap();
    assert_eq!(answer["subscribers"], expected.max_subscribers);
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        metric_value(
            &metrics(&http, &base).await,
            "comet_subscriptions_refused_total"
        ) >= 1
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("refusing a subscription"), "{logged}");
    drop(subscribers);
}
