//! `comet serve --config FILE`: every option from a TOML file, with
//! defaults < file < environment < flags; errors naming the file, line and
//! key; and SIGHUP reloading the file and the key files, ending only the
//! streams the new rules no longer allow.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use comet_testkit::{ServerProcess, SseStream, client, within};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_comet"))
}

fn dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("config-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn serve(config: &Path, env: &[(&str, &str)], args: &[&str]) -> ServerProcess {
    let mut command = Command::new(binary());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .args(args)
        .env("COMET_LOG", "error")
        .stderr(Stdio::inherit());
    for (name, value) in env {
        command.env(name, value);
    }
    ServerProcess::spawn_command(command)
}

/// The `retry:` an SSE stream of `server` opens with.
async fn sse_retry(server: &ServerProcess) -> String {
    let response = client()
        .get(format!("{}/sse/a", server.base()))
        .send()
        .await
        .unwrap();
    let mut stream = SseStream::new(response);
    stream.until_raw(b"\n").await;
    let text = String::from_utf8_lossy(&stream.raw).to_string();
    text.lines().next().unwrap().to_string()
}

#[tokio::test]
async fn the_file_is_overridden_by_the_environment_and_flags() {
    let dir = dir("precedence");
    let config = dir.join("comet.toml");
    std::fs::write(
        &config,
        "# every option of comet serve\nmemory = true\nsse_retry = \"1234ms\"\n",
    )
    .unwrap();
    let from_file = serve(&config, &[], &[]);
    assert_eq!(sse_retry(&from_file).await, "retry: 1234");
    let from_env = serve(&config, &[("COMET_SSE_RETRY", "2345ms")], &[]);
    assert_eq!(sse_retry(&from_env).await, "retry: 2345");
    let from_flag = serve(
        &config,
        &[("COMET_SSE_RETRY", "2345ms")],
        &["--sse-retry", "3456ms"],
    );
    assert_eq!(sse_retry(&from_flag).await, "retry: 3456");
    // And the default when nobody says anything.
    std::fs::write(&config, "memory = true\n").unwrap();
    let default = serve(&config, &[], &[]);
    assert_eq!(sse_retry(&default).await, "retry: 3000");
    // The environment names the file too.
    std::fs::write(&config, "memory = true\nsse_retry = \"4567ms\"\n").unwrap();
    let mut command = Command::new(binary());
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("COMET_CONFIG", &config)
        .env("COMET_LOG", "error");
    let by_env = ServerProcess::spawn_command(command);
    assert_eq!(sse_retry(&by_env).await, "retry: 4567");
}

#[test]
fn every_error_names_the_file_line_and_key() {
    let dir = dir("errors");
    for (text, expected) in [
        (
            "memory = true\n\nmax_bodyy = \"1MiB\"\n",
            ":3: max_bodyy: unknown key",
        ),
        (
            "memory = \"yes\"\n",
            ":1: memory: expected true or false, found string",
        ),
        (
            "memory = true\nmax_body = \"lots\"\n",
            ":2: max_body: invalid value 'lots'",
        ),
        (
            "max_channels = true\n",
            ":1: max_channels: expected a string or a number",
        ),
        ("public_channels = [\"a b\"]\nmemory = true\n", "a b"),
        ("max_body = \n", "line 1"),
        (
            "config = \"other.toml\"\n",
            ":1: config: a configuration file cannot name another",
        ),
    ] {
        let config = dir.join("comet.toml");
        std::fs::write(&config, text).unwrap();
        let output = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .output()
            .expect("run comet");
        assert!(!output.status.success(), "{text:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("comet.toml"), "{text:?}: {stderr}");
        assert!(stderr.contains(expected), "{text:?}: {stderr}");
    }
    let output = Command::new(binary())
        .args(["serve", "--config", "/nonexistent/comet.toml"])
        .output()
        .expect("run comet");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot be read"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_api_keys_and_ends_only_the_streams_they_no_longer_allow() {
    let dir = dir("reload");
    let keys = dir.join("keys");
    // The store users get by default.
    let data = dir.join("data");
    let old_key = "the-old-api-key-000001";
    let new_key = "the-new-api-key-000002";
    std::fs::write(&keys, format!("{old_key}\n")).unwrap();
    let config = dir.join("comet.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\napi_keys_file = \"{}\"\npublic_channels = [\"news\"]\n",
            data.display(),
            keys.display()
        ),
    )
    .unwrap();
    let log = dir.join("log");
    let mut command = Command::new(binary());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("COMET_LOG", "info")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    let server = ServerProcess::spawn_command(command);
    let base = server.base().to_string();
    let http = client();
    let publish_to = |channel: &'static str, key: &'static str, data: &'static str| {
        let http = http.clone();
        let base = base.clone();
        async move {
            http.post(format!("{base}/pub/{channel}"))
                .bearer_auth(key)
                .body(data)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let publish = |key, data| publish_to("news", key, data);
    let mut subscriber = SseStream::new(http.get(format!("{base}/sse/news")).send().await.unwrap());
    subscriber.until_raw(b"retry:").await;
    // A subscriber to a channel that is not public, with the key the
    // reload takes away: its stream ends with the reload.
    let mut revoked = SseStream::new(
        http.get(format!("{base}/sse/desk?token={old_key}"))
            .send()
            .await
            .unwrap(),
    );
    revoked.until_raw(b"retry:").await;
    assert_eq!(publish(old_key, "before").await, 201);
    assert_eq!(subscriber.next_event().await.unwrap().data, "before");

    std::fs::write(&keys, format!("# rotated\n{new_key}\n")).unwrap();
    server.signal("HUP");
    within("the reload", async {
        while publish_to("probe", old_key, "refused?").await != 401 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        revoked.next_event().await.is_none(),
        "a stream the new keys do not allow goes on"
    );
    assert_eq!(publish(new_key, "after").await, 201);
    // The subscriber stayed connected through it.
    assert_eq!(subscriber.next_event().await.unwrap().data, "after");

    // A reload that fails keeps the configuration in force, and says why.
    std::fs::write(&keys, "short\n").unwrap();
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\napi_keys_file = \"{}\"\npublic_channels = [\"news\"]\nmax_body = \"2MiB\"\n",
            data.display(),
            keys.display()
        ),
    )
    .unwrap();
    server.signal("HUP");
    until_logged(&log, "not reloaded").await;
    assert_eq!(publish(new_key, "still").await, 201);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("keys:1"), "{logged}");
    assert!(
        !logged.contains(new_key) && !logged.contains(old_key),
        "a key was logged"
    );

    // An option that needs a restart is said to, and kept.
    std::fs::write(&keys, format!("{new_key}\n")).unwrap();
    server.signal("HUP");
    until_logged(&log, "a restart is needed").await;
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("max_body"), "{logged}");
    assert_eq!(subscriber.next_event().await.unwrap().data, "still");

    // A reload that finds the authorization sources as they were leaves
    // the rules (and the open streams) alone.
    server.signal("HUP");
    until_logged(&log, "open streams are not judged again").await;
    assert_eq!(publish(new_key, "unchanged").await, 201);
    assert_eq!(subscriber.next_event().await.unwrap().data, "unchanged");
}

/// Waits until the server's log at `log` holds `text`.
async fn until_logged(log: &Path, text: &str) {
    within(&format!("{text:?} in the log"), async {
        while !std::fs::read_to_string(log).unwrap().contains(text) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The example configuration names every option of `comet serve`, and with
/// its lines taken out of their comments (file paths aside: those files do
/// not exist here) it starts a server.
#[tokio::test]
async fn the_example_file_covers_every_option_and_works() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let example = std::fs::read_to_string(root.join("comet.example.toml")).unwrap();
    let help = Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    for line in help.lines() {
        let Some(flag) = line.trim_start().strip_prefix("--") else {
            continue;
        };
        let key = flag.split([' ', '=']).next().unwrap().replace('-', "_");
        if key == "help" || key == "config" {
            continue;
        }
        assert!(
            example.contains(&format!("# {key} = ")) || example.contains(&format!("# {key}s = ")),
            "the example does not show {key}"
        );
    }
    let dir = dir("example");
    let uncommented: String = example
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| {
            line.contains(" = ") && !line.contains("_file") && !line.starts_with("listen")
        })
        // Storage, the connection caps (they depend on this machine's
        // open-files limit) and the JWT claims (they need a key file) aside.
        .filter(|line| {
            ![
                "data_dir",
                "memory",
                "redis",
                "max_connections",
                "max_subscribers",
                "jwt_",
            ]
            .iter()
            .any(|skipped| line.starts_with(skipped))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let config = dir.join("comet.toml");
    std::fs::write(&config, format!("memory = true\n{uncommented}")).unwrap();
    let server = serve(&config, &[], &[]);
    assert_eq!(sse_retry(&server).await, "retry: 3000");
}
