//! Tokens issued by another JWT library (npm `jose`), as any back end would
//! issue them, for every algorithm the server verifies; and `comet token`'s
//! own, checked against the same server.

use std::path::Path;
use std::process::Command;

use comet_testkit::{ServerProcess, client};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_comet"))
}

async fn status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.expect("an answer").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_another_library_work_for_every_algorithm() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("jose-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "a-shared-secret-of-at-least-32-bytes\n").unwrap();
    let tokens = comet_testkit::node::jose_tokens(&dir, &secret);
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let server = ServerProcess::spawn(
        binary(),
        &[
            "--memory",
            "--jwt-secret-file",
            &path("secret"),
            "--jwt-public-key-file",
            &path("rs256.pem"),
            "--jwt-public-key-file",
            &path("es256.pem"),
            "--jwt-public-key-file",
            &path("eddsa.pem"),
        ],
    );
    let base = server.base();
    let http = client();
    for algorithm in ["HS256", "RS256", "ES256", "EdDSA"] {
        let valid = tokens[algorithm]["valid"].as_str().unwrap();
        let expired = tokens[algorithm]["expired"].as_str().unwrap();
        let publish = http
            .post(format!("{base}/pub/news"))
            .bearer_auth(valid)
            .body(algorithm);
        assert_eq!(status(publish).await, 201, "{algorithm}: publish");
        let poll = http.get(format!("{base}/poll/news?token={valid}"));
        assert_eq!(status(poll).await, 200, "{algorithm}: subscribe");
        let elsewhere = http
            .post(format!("{base}/pub/sport"))
            .bearer_auth(valid)
            .body("x");
        assert_eq!(status(elsewhere).await, 403, "{algorithm}: not granted");
        let late = http.get(format!("{base}/poll/news")).bearer_auth(expired);
        assert_eq!(status(late).await, 401, "{algorithm}: expired");
        // One character of the signature changed: refused.
        let mut forged = valid.to_string();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        let bad = http.get(format!("{base}/poll/news")).bearer_auth(&forged);
        assert_eq!(status(bad).await, 401, "{algorithm}: forged");
    }

    // `comet token` with the same secret: accepted, and exactly what it
    // says.
    let minted = Command::new(binary())
        .args(["token", "--jwt-secret-file", &path("secret")])
        .args([
            "--subscribe",
            "news,user.42.*",
            "--publish",
            "news",
            "--ttl",
            "10m",
        ])
        .output()
        .expect("run comet token");
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_string();
    let sub = http
        .get(format!("{base}/poll/news,user.42.inbox"))
        .bearer_auth(&token);
    assert_eq!(status(sub).await, 200);
    let other = http.get(format!("{base}/poll/user.43")).bearer_auth(&token);
    assert_eq!(status(other).await, 403);
    let publish = http
        .post(format!("{base}/pub/news"))
        .bearer_auth(&token)
        .body("minted");
    assert_eq!(status(publish).await, 201);
}

#[test]
fn bad_authorization_options_stop_the_start_naming_the_file_and_line() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bad-auth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys");
    std::fs::write(
        &keys,
        "# keys\ngood-key-00000000001 news\nsecret-key-0000000002 news,a b\n",
    )
    .unwrap();
    let short = dir.join("short");
    std::fs::write(&short, "too-short\n").unwrap();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let keys = keys.to_str().unwrap();
    for (args, expected, never) in [
        (
            vec!["--api-keys-file", keys],
            format!("{keys}:3"),
            Some("secret-key"),
        ),
        (
            vec!["--api-keys-file", "/nonexistent/keys"],
            "cannot be read".to_string(),
            None,
        ),
        (
            vec!["--jwt-secret-file", short.to_str().unwrap()],
            "too short".to_string(),
            Some("too-short"),
        ),
        (
            vec!["--jwt-public-key-file", not_pem.to_str().unwrap()],
            "not a PEM public key".to_string(),
            None,
        ),
        (
            vec!["--public-channels", "a*b"],
            "may only end".to_string(),
            None,
        ),
        (
            vec!["--anonymous-publish-from", "everyone"],
            "not a network".to_string(),
            None,
        ),
        (
            vec!["--jwt-issuer", "x"],
            "need a JWT key".to_string(),
            None,
        ),
    ] {
        let output = Command::new(binary())
            .args(["serve", "--memory", "--listen", "127.0.0.1:0"])
            .args(&args)
            .output()
            .expect("run comet");
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&expected), "{args:?}: {stderr}");
        if let Some(never) = never {
            assert!(!stderr.contains(never), "{args:?} shows a secret: {stderr}");
        }
    }
}

/// Tokens never reach the log, wherever they came from and whatever
/// became of them, even at the most talkative level.
#[tokio::test]
async fn tokens_never_reach_a_log_line() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("token-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys");
    let key = "a-key-that-must-stay-secret-01";
    std::fs::write(&keys, format!("{key} news\n")).unwrap();
    let log = dir.join("log");
    let mut command = Command::new(binary());
    command
        .args([
            "serve",
            "--memory",
            "--listen",
            "127.0.0.1:0",
            "--api-keys-file",
        ])
        .arg(&keys)
        .env("COMET_LOG", "trace")
        .stderr(std::process::Stdio::from(
            std::fs::File::create(&log).unwrap(),
        ));
    let server = ServerProcess::spawn_command(command);
    let base = server.base();
    let http = client();
    let wrong = "a-wrong-key-that-must-not-show";
    for token in [key, wrong] {
        let _ = http
            .get(format!("{base}/poll/news?token={token}"))
            .send()
            .await;
        let _ = http
            .get(format!("{base}/poll/sport?token={token}"))
            .send()
            .await;
        let _ = http
            .post(format!("{base}/pub/%6Eews"))
            .bearer_auth(token)
            .body("x")
            .send()
            .await;
        let _ = http
            .get(format!("{base}/channels"))
            .header("cookie", format!("comet_token={token}"))
            .send()
            .await;
    }
    drop(server);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("request refused"),
        "the refusals are logged"
    );
    assert!(!logged.contains(key), "the key was logged");
    assert!(!logged.contains(wrong), "a presented token was logged");
}
