//! `comet pub`, `comet sub` and `comet parse` through the real binary.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use comet_testkit::{ServerProcess, within};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_comet"))
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run comet");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().expect("comet finishes")
}

fn stdout_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn parse_prints_every_event_and_the_end_state() {
    let stream = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\nretry: 2500\nevent: custom\ndata: a\r\ndata: b\r\rid: 7\n\ndata: never dispatched";
    let output = run(&["parse"], stream);
    assert!(output.status.success());
    assert_eq!(
        stdout_lines(&output),
        [
            r#"{"type":"message","data":"first event","lastEventId":"1"}"#,
            r#"{"type":"message","data":"second event","lastEventId":""}"#,
            r#"{"type":"message","data":" third event","lastEventId":""}"#,
            r#"{"type":"custom","data":"a\nb","lastEventId":""}"#,
            r#"{"end":true,"retry":2500,"lastEventId":"7"}"#,
        ]
    );
}

#[test]
fn parse_resumes_from_a_last_event_id_and_reports_no_retry() {
    let output = run(&["parse", "--last-event-id", "41"], b"data: x\n\n");
    assert_eq!(
        stdout_lines(&output),
        [
            r#"{"type":"message","data":"x","lastEventId":"41"}"#,
            r#"{"end":true,"retry":null,"lastEventId":"41"}"#,
        ]
    );
}

#[test]
fn parse_refuses_a_line_beyond_the_limit_clearly() {
    let mut stream = b"data: ok\n\ndata: ".to_vec();
    stream.extend(std::iter::repeat_n(b'x', 5000));
    let output = run(&["parse", "--max-line", "1000"], &stream);
    assert!(!output.status.success());
    assert_eq!(
        stdout_lines(&output),
        [r#"{"type":"message","data":"ok","lastEventId":""}"#],
        "what came before the error is printed"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("longer than the limit of 1000 bytes"),
        "{stderr}"
    );
}

struct Sub {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Sub {
    fn start(args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(binary())
            .arg("sub")
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run comet sub");
        let stdout = child.stdout.take().unwrap();
        Self {
            _child: child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    async fn line(&mut self) -> String {
        within("a line from comet sub", self.lines.next_line())
            .await
            .expect("read")
            .expect("comet sub is still running")
    }
}

fn publish(server: &str, args: &[&str], stdin: &[u8]) -> serde_json::Value {
    let mut all = vec!["pub", "--server", server];
    all.extend_from_slice(args);
    let output = run(&all, stdin);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the publish answer")
}

/// Waits until `comet sub` is subscribed (the server counts it).
async fn subscribed(server: &str, transport: &str) {
    comet_testkit::wait_for_metric(
        &comet_testkit::client(),
        server,
        &format!("comet_subscribers{{transport=\"{transport}\"}} 1"),
    )
    .await;
}

#[tokio::test]
async fn pub_and_sub_round_trip_on_every_transport() {
    let server = ServerProcess::spawn(binary(), &["--memory"]);
    let base = server.base();
    for (transport, metric) in [
        ("sse", "sse"),
        ("stream", "stream"),
        ("poll", "longpoll"),
        ("ws", "ws"),
    ] {
        let mut sub = Sub::start(&[
            "news,sport",
            "--server",
            base,
            "--transport",
            transport,
            "--format",
            "json",
        ]);
        subscribed(base, metric).await;
        let first = publish(base, &["news", "hello"], b"");
        let second = publish(base, &["sport", "--event", "score"], b"from\nstdin");
        let third = publish(base, &["news", "-"], b"dash");
        for (answer, (channel, event, data)) in [&first, &second, &third].into_iter().zip([
            ("news", "message", "hello"),
            ("sport", "score", "from\nstdin"),
            ("news", "message", "dash"),
        ]) {
            let line: serde_json::Value = serde_json::from_str(&sub.line().await).unwrap();
            assert_eq!(
                line,
                serde_json::json!({"id": answer["id"], "channel": channel, "event": event, "data": data}),
                "{transport}"
            );
        }
    }
}

#[tokio::test]
async fn sub_prints_text_and_says_when_a_gap_happened() {
    let server = ServerProcess::spawn(binary(), &["--memory", "--retention-messages", "2"]);
    let base = server.base();
    let first = publish(base, &["news", "zero"], b"");
    for data in ["one", "two", "three"] {
        publish(base, &["news", data], b"");
    }
    publish(base, &["news", "--event", "alert", "four"], b"");
    let id = first["id"].as_str().unwrap();
    let mut sub = Sub::start(&["news", "--server", base, "--since", id, "--count", "2"]);
    assert_eq!(
        sub.line().await,
        "-- gap in news: messages were missed (no longer in the server's history)"
    );
    assert_eq!(sub.line().await, "news: three");
    assert_eq!(sub.line().await, "news [alert]: four");
}

#[tokio::test]
async fn sub_reads_any_sse_url() {
    let server = ServerProcess::spawn(binary(), &["--memory"]);
    let base = server.base();
    let url = format!("{base}/sse/plain");
    let mut sub = Sub::start(&[&url, "--format", "json", "--count", "1"]);
    subscribed(base, "sse").await;
    let answer = publish(base, &["plain", "--event", "kind", "payload"], b"");
    let line: serde_json::Value = serde_json::from_str(&sub.line().await).unwrap();
    assert_eq!(
        line,
        serde_json::json!({"type": "kind", "data": "payload", "lastEventId": answer["id"]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_resumes_by_itself_across_a_server_crash() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir = dir.to_str().unwrap().to_string();
    let args = ["--data-dir", dir.as_str()];
    let mut server = ServerProcess::spawn(binary(), &args);
    let base = server.base().to_string();
    let address = server.address().to_string();
    for transport in ["sse", "stream", "poll", "ws"] {
        let mut sub = Sub::start(&["news", "--server", &base, "--transport", transport]);
        let metric = if transport == "poll" {
            "longpoll"
        } else {
            transport
        };
        subscribed(&base, metric).await;
        publish(&base, &["news", &format!("{transport} 1")], b"");
        assert_eq!(sub.line().await, format!("news: {transport} 1"));
        publish(&base, &["news", &format!("{transport} 2")], b"");
        server.signal("KILL");
        drop(server);
        server = ServerProcess::spawn_at(binary(), &address, &args);
        publish(&base, &["news", &format!("{transport} 3")], b"");
        assert_eq!(sub.line().await, format!("news: {transport} 2"));
        assert_eq!(sub.line().await, format!("news: {transport} 3"));
    }
}

#[test]
fn pub_errors_are_clear() {
    let output = run(&["pub", "bad name", "x"], b"");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid channel name"));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let output = run(
        &["pub", "news", "x", "--server", &format!("http://{address}")],
        b"",
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("HTTP request failed"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `comet token` mints what `comet pub` and `comet sub` need against a
/// server that requires tokens; a subscription whose token expires ends
/// with a clear error, on every streaming transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_and_sub_take_tokens_and_say_when_one_expired() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-tokens-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "a-cli-test-secret-of-32-bytes-at-least\n").unwrap();
    let secret = secret.to_str().unwrap();
    let server = ServerProcess::spawn(binary(), &["--memory", "--jwt-secret-file", secret]);
    let base = server.base();
    let mint = |args: &[&str]| {
        let mut all = vec!["token", "--jwt-secret-file", secret];
        all.extend_from_slice(args);
        let output = run(&all, b"");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    let publisher = mint(&["--publish", "news", "--ttl", "10m"]);

    let refused = run(&["pub", "--server", base, "news", "x"], b"");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("unauthorized"),
        "{stderr}"
    );
    let answer = publish(base, &["--token", &publisher, "news", "with a token"], b"");
    assert_eq!(answer["channel"], "news");

    for transport in ["sse", "stream"] {
        let short = mint(&["--subscribe", "news", "--ttl", "3s"]);
        let mut child = tokio::process::Command::new(binary())
            .args(["sub", "news", "--server", base, "--token", &short])
            .args(["--transport", transport, "--format", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run comet sub");
        // The metrics need a token granting every channel.
        let admin = mint(&["--subscribe", "*", "--ttl", "10m"]);
        let line = format!("comet_subscribers{{transport=\"{transport}\"}} 1");
        within("the subscriber", async {
            loop {
                let text = comet_testkit::client()
                    .get(format!("{base}/metrics"))
                    .bearer_auth(&admin)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                if text.contains(&line) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
        publish(base, &["--token", &publisher, "news", "before expiry"], b"");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = within("the message", lines.next_line())
            .await
            .unwrap()
            .unwrap();
        assert!(line.contains("before expiry"), "{line}");
        let status = within("comet sub to end", child.wait()).await.unwrap();
        assert!(!status.success(), "{transport}");
        let mut stderr = String::new();
        use tokio::io::AsyncReadExt;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .await
            .unwrap();
        assert!(
            stderr.contains("the token expired"),
            "{transport}: {stderr}"
        );
    }
}

/// `comet pub --idempotency-key`: a repeat prints the original with
/// `"duplicate":true`. `comet pub --batch -`: NDJSON lines published in
/// batches, one answer line each, in order; a bad line is named and
/// nothing is published.
#[tokio::test]
async fn pub_takes_an_idempotency_key_and_batches_of_ndjson() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-batch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = ServerProcess::spawn(
        binary(),
        &[
            "--data-dir",
            dir.to_str().unwrap(),
            "--retention-messages",
            "5000",
        ],
    );
    let base = server.base();
    let first = publish(base, &["news", "hello", "--idempotency-key", "k-1"], b"");
    let again = publish(base, &["news", "hello", "--idempotency-key", "k-1"], b"");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["duplicate"], true);
    assert!(first.get("duplicate").is_none(), "{first}");

    let mut lines = String::new();
    for i in 0..2500 {
        let channel = ["a", "b"][i % 2];
        if i == 7 {
            lines.push_str(&format!(
                "{{\"channel\":\"{channel}\",\"event\":\"tick\",\"data\":{{\"n\": {i}}}}}\n\n"
            ));
        } else {
            lines.push_str(&format!(
                "{{\"channel\":\"{channel}\",\"data\":\"m{i}\"}}\n"
            ));
        }
    }
    let output = run(&["pub", "--server", base, "--batch", "-"], lines.as_bytes());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers = stdout_lines(&output);
    assert_eq!(answers.len(), 2500);
    let stored = all_messages(base, "a,b").await;
    assert_eq!(stored.len(), 2500);
    for (i, (answer, message)) in answers.iter().zip(&stored).enumerate() {
        let answer: serde_json::Value = serde_json::from_str(answer).unwrap();
        assert_eq!(answer["id"], message["id"], "answer {i} in order");
    }
    assert_eq!(stored[7]["event"], "tick");
    assert_eq!(stored[7]["data"], r#"{"n":7}"#);

    let bad = "{\"channel\":\"a\",\"data\":\"fine\"}\n{\"channel\":\"a\"}\n";
    let output = run(&["pub", "--server", base, "--batch", "-"], bad.as_bytes());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("-, line 2") && stderr.contains("data"),
        "{stderr}"
    );
    assert_eq!(
        all_messages(base, "a").await.len(),
        1250,
        "nothing more published"
    );
}

/// Every retained message of `channels`, polling page by page.
async fn all_messages(base: &str, channels: &str) -> Vec<serde_json::Value> {
    let http = comet_testkit::client();
    let mut url = format!("{base}/poll/{channels}?since=&backlog=100000");
    let mut all = Vec::new();
    loop {
        let answer = comet_testkit::get_json(&http, &url).await;
        let messages = answer["messages"].as_array().unwrap();
        if messages.is_empty() {
            return all;
        }
        all.extend(messages.iter().cloned());
        let cursor = answer["cursor"].as_str().unwrap();
        url = format!(
            "{base}/poll/{channels}?since={}",
            comet_testkit::encode(cursor)
        );
    }
}
