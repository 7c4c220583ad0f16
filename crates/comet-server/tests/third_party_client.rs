//! A real third-party SSE client, the npm `eventsource` package (installed
//! by the test script), reads Comet's stream, reconnects by itself when the
//! server restarts, and resumes exactly with `Last-Event-ID`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use comet_testkit::{TestServer, client, publish, publish_event, within};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct NodeClient {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl NodeClient {
    fn start(url: &str, count: usize) -> Self {
        let root = repository_root();
        assert!(
            root.join("node_modules/eventsource").exists(),
            "npm package `eventsource` is missing: run scripts/test.sh (it installs it)"
        );
        let mut child = Command::new("node")
            .arg(root.join("tests/clients/eventsource.mjs"))
            .args([url, &count.to_string()])
            .current_dir(&root)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run node (Node.js is required)");
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    async fn next(&mut self) -> Value {
        let line = within("a line from the eventsource client", self.lines.next_line())
            .await
            .expect("read")
            .expect("the client is still running");
        serde_json::from_str(&line).expect("JSON line")
    }

    /// The next event, skipping connection errors (expected during restarts).
    async fn next_event(&mut self) -> Value {
        loop {
            let value = self.next().await;
            if value.get("type").is_some() {
                return value;
            }
        }
    }

    async fn opened(&mut self) {
        loop {
            if self.next().await.get("open").is_some() {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_npm_eventsource_client_receives_reconnects_and_resumes_exactly() {
    let mut server = TestServer::builder()
        .config(|c| c.sse_retry = Duration::from_millis(100))
        .start();
    let http = client();
    let mut node = NodeClient::start(&server.url("/sse/news"), 8);
    node.opened().await;

    let mut ids = Vec::new();
    ids.push(publish(&http, &server.base(), "news", "first\nsecond line").await);
    ids.push(publish_event(&http, &server.base(), "news", Some("update"), "typed").await);
    ids.push(publish(&http, &server.base(), "news", "").await);
    ids.push(publish(&http, &server.base(), "news", "cr\r\ncrlf").await);
    let mut events = Vec::new();
    for _ in 0..4 {
        events.push(node.next_event().await);
    }

    // The server goes away and comes back; the client reconnects on its own
    // with Last-Event-ID and gets exactly what it missed meanwhile.
    server.restart();
    for i in 0..4 {
        ids.push(publish(&http, &server.base(), "news", &format!("after restart {i}")).await);
    }
    node.opened().await;
    for _ in 0..4 {
        events.push(node.next_event().await);
    }

    let received: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["data"].as_str().unwrap(),
                e["lastEventId"].as_str().unwrap(),
            )
        })
        .collect();
    let expected = vec![
        ("message", "first\nsecond line", ids[0].as_str()),
        ("update", "typed", ids[1].as_str()),
        ("message", "", ids[2].as_str()),
        ("message", "cr\ncrlf", ids[3].as_str()),
        ("message", "after restart 0", ids[4].as_str()),
        ("message", "after restart 1", ids[5].as_str()),
        ("message", "after restart 2", ids[6].as_str()),
        ("message", "after restart 3", ids[7].as_str()),
    ];
    assert_eq!(received, expected);
    let status = within("the client to exit", node.child.wait())
        .await
        .unwrap();
    assert!(status.success());
}
