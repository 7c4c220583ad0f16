//! The npm `eventsource` package (a WHATWG `EventSource` for Node), driven
//! by `tests/clients/eventsource.mjs`: a real third-party SSE client.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::within;

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running `eventsource` client. Killed when dropped.
pub struct EventSourceClient {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl EventSourceClient {
    /// Connects to `url` and exits after `count` message events.
    pub fn start(url: &str, count: usize) -> Self {
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

    /// The next event (`{"type","data","lastEventId"}`), skipping connection
    /// errors (expected while a server restarts).
    pub async fn next_event(&mut self) -> Value {
        loop {
            let value = self.next().await;
            if value.get("type").is_some() {
                return value;
            }
        }
    }

    /// Waits for the next (re)connection.
    pub async fn opened(&mut self) {
        loop {
            if self.next().await.get("open").is_some() {
                return;
            }
        }
    }

    /// Waits for the client to exit and tells whether it succeeded.
    pub async fn finished(mut self) -> bool {
        within("the eventsource client to exit", self.child.wait())
            .await
            .expect("wait for node")
            .success()
    }
}

/// Tokens made by the npm `jose` library (`tests/clients/jose-tokens.mjs`)
/// for HS256 (with the secret in `secret_file`), RS256, ES256 and EdDSA,
/// whose public keys it writes to `dir` (`rs256.pem`, `es256.pem`,
/// `eddsa.pem`). Returns `{ALG: {"valid": TOKEN, "expired": TOKEN}}`.
pub fn jose_tokens(dir: &std::path::Path, secret_file: &std::path::Path) -> Value {
    let root = repository_root();
    assert!(
        root.join("node_modules/jose").exists(),
        "npm package `jose` is missing: run scripts/test.sh (it installs it)"
    );
    let output = std::process::Command::new("node")
        .arg(root.join("tests/clients/jose-tokens.mjs"))
        .arg(dir)
        .arg(secret_file)
        .current_dir(&root)
        .output()
        .expect("run node (Node.js is required)");
    assert!(
        output.status.success(),
        "jose-tokens.mjs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON object of tokens")
}
