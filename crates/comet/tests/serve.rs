//! `comet serve` as a process: the address line, the curl round trip from
//! the README, clean shutdown on SIGTERM and SIGINT, and clear refusals of
//! bad options.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use comet_testkit::{NdjsonStream, ServerProcess, SseStream, client, publish, within};
use tokio::io::{AsyncBufReadExt, BufReader};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_comet"))
}

#[tokio::test]
async fn curl_sees_what_curl_publishes() {
    let server = ServerProcess::spawn(binary(), &["--memory"]);
    let mut subscriber = tokio::process::Command::new("curl")
        .args(["-sN", &format!("{}/sse/news", server.base())])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl is installed (scripts/test.sh installs it)");
    let mut lines = BufReader::new(subscriber.stdout.take().unwrap()).lines();
    let first = within("curl's first line", lines.next_line())
        .await
        .unwrap();
    assert_eq!(first.as_deref(), Some("retry: 3000"));
    let published = Command::new("curl")
        .args(["-s", "-d", "hi", &format!("{}/pub/news", server.base())])
        .output()
        .expect("run curl");
    let answer: serde_json::Value = serde_json::from_slice(&published.stdout).unwrap();
    assert_eq!(answer["channel"], "news");
    let id = answer["id"].as_str().unwrap().to_string();
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("data: hi") {
        let line = within("curl's output", lines.next_line())
            .await
            .unwrap()
            .unwrap();
        seen.push(line);
    }
    assert!(seen.contains(&format!("id: {id}")), "{seen:?}");
}

async fn check_clean_stop(signal: &str) {
    let mut server = ServerProcess::spawn(binary(), &["--memory"]);
    let base = server.base().to_string();
    let http = client();
    let mut sse = SseStream::new(http.get(format!("{base}/sse/a")).send().await.unwrap());
    sse.until_raw(b"retry:").await;
    let mut stream = NdjsonStream::new(http.get(format!("{base}/stream/a")).send().await.unwrap());
    let id = publish(&http, &base, "a", "before").await;
    assert_eq!(sse.next_event().await.unwrap().data, "before");
    assert_eq!(stream.next_item().await.unwrap()["data"], "before");
    // A long poll after the last message: held until the signal comes.
    let long_poll = tokio::spawn({
        let url = format!("{base}/poll/a?wait=60&since={}", comet_testkit::encode(&id));
        async move { client().get(url).send().await.unwrap() }
    });
    comet_testkit::wait_for_metric(&http, &base, "comet_subscribers{transport=\"longpoll\"} 1")
        .await;
    server.signal(signal);
    // Open streams end cleanly: the body finishes (no error), no hang.
    sse.until_end().await;
    assert_eq!(sse.error, None, "the SSE body ended cleanly");
    assert!(stream.next_item().await.is_none());
    assert_eq!(stream.error, None, "the NDJSON body ended cleanly");
    // The held long poll is answered: nothing new, the same cursor.
    let answer = within("the held long poll", long_poll).await.unwrap();
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["messages"], serde_json::json!([]));
    assert_eq!(body["cursor"], id.as_str());
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(
        status.success(),
        "exit status after SIG{signal}: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_cleanly_and_exits_zero() {
    check_clean_stop("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_ends_streams_cleanly_and_exits_zero() {
    check_clean_stop("INT").await;
}

#[test]
fn bad_options_are_refused_clearly() {
    for (args, expected) in [
        (vec!["--listen", "nowhere"], "invalid socket address"),
        (vec!["--max-body", "lots"], "is not a size"),
        (vec!["--heartbeat", "5y"], "unknown duration unit"),
        (
            vec!["--retention-messages", "0"],
            "--retention-messages must be at least 1",
        ),
        (
            vec!["--max-wait", "99999999999999999999999999999999999999999s"],
            "is too long",
        ),
        (
            vec![
                "--memory",
                "--max-connections",
                "10",
                "--max-subscribers",
                "20",
            ],
            "must not exceed",
        ),
        (
            vec!["--memory", "--data-dir", "/tmp/x"],
            "cannot be used with",
        ),
    ] {
        let output = Command::new(binary())
            .arg("serve")
            .args(&args)
            .output()
            .expect("run comet");
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn a_taken_address_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = Command::new(binary())
        .args(["serve", "--memory", "--listen", &address])
        .output()
        .expect("run comet");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
}

#[test]
fn help_explains_both_stores() {
    let output = Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .expect("run comet");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("durable history store (the default store)"),
        "{help}"
    );
    assert!(help.contains("Keep history in memory only"), "{help}");
}
