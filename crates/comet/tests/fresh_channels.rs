//! Publishing to ever new channel names (a channel per user) costs only
//! what is retained: channels with nothing retained are forgotten, and what
//! is remembered of them for gap detection is bounded. On both stores, and
//! across a restart of the durable one (which loads only what it holds).

use std::path::Path;

use comet_testkit::{ServerProcess, client, encode, get_json, metric_value, metrics};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_comet"))
}

const CHANNELS: usize = 4_000;
const FORGOTTEN: u64 = 500;
// Each message counts 64 + 4 (data) + 7 (type) + 5 or 6 (name) against
// the store's byte limit: about 250 messages fit.
const STORE_BYTES: &str = "20KiB";

/// Publishes one message to each of `CHANNELS` fresh names (eight at a
/// time); returns the id of the first.
async fn publish_to_fresh_channels(base: &str) -> String {
    let mut writers = Vec::new();
    for writer in 0..8 {
        let base = base.to_string();
        writers.push(tokio::spawn(async move {
            let http = client();
            let mut first = None;
            for i in (writer..CHANNELS).step_by(8) {
                let response = http
                    .post(format!("{base}/pub/u{i}"))
                    .body("data")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
                let answer: serde_json::Value = response.json().await.unwrap();
                first.get_or_insert_with(|| answer["id"].as_str().unwrap().to_string());
            }
            first
        }));
    }
    let mut first = None;
    for writer in writers {
        let id = writer.await.unwrap();
        if first.is_none() {
            first = id;
        }
    }
    first.unwrap()
}

/// What the store holds is bounded by retention and the forgotten-channels
/// bound, not by how many names were ever used; a reader of a forgotten
/// channel from before its message is still told of the gap.
async fn check_bounded(base: &str, first_id: &str) {
    let http = client();
    let text = metrics(&http, base).await;
    let held = metric_value(&text, "comet_store_channels");
    let forgotten = metric_value(&text, "comet_store_forgotten_channels");
    assert!(held <= 300, "{held} channels held");
    // The durable store lets go of forgotten channels in batches of a
    // sixteenth of the bound.
    assert!(
        forgotten <= FORGOTTEN + FORGOTTEN / 16,
        "{forgotten} forgotten channels remembered"
    );
    let listed = get_json(&http, &format!("{base}/channels?limit=1000")).await;
    assert_eq!(
        listed["channels"].as_array().unwrap().len() as u64,
        held,
        "only held channels are listed"
    );
    // u0 was published to first and forgotten long ago (folded into the
    // approximate marks): a reader from before its message hears of it.
    let before_first = first_id.replacen("/u0", "", 1);
    let (epoch, seq) = before_first.rsplit_once('-').unwrap();
    let since = format!("{epoch}-{}", seq.parse::<u64>().unwrap() - 1);
    let answer = get_json(&http, &format!("{base}/poll/u0?since={}", encode(&since))).await;
    assert_eq!(
        answer["gaps"],
        serde_json::json!([{"channel": "u0", "reason": "trimmed"}]),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_channel_names_cost_only_what_is_retained_in_memory() {
    let server = ServerProcess::spawn(
        binary(),
        &[
            "--memory",
            "--max-store-bytes",
            STORE_BYTES,
            "--forgotten-channels",
            &FORGOTTEN.to_string(),
        ],
    );
    let first = publish_to_fresh_channels(server.base()).await;
    check_bounded(server.base(), &first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_channel_names_cost_only_what_is_retained_on_disk_and_at_start() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("fresh-channels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.to_str().unwrap().to_string();
    let forgotten = FORGOTTEN.to_string();
    let args = [
        "--data-dir",
        dir_arg.as_str(),
        "--max-store-bytes",
        STORE_BYTES,
        "--forgotten-channels",
        forgotten.as_str(),
    ];
    let mut server = ServerProcess::spawn(binary(), &args);
    let first = publish_to_fresh_channels(server.base()).await;
    check_bounded(server.base(), &first).await;
    server.signal("TERM");
    assert!(
        server
            .wait_exit(std::time::Duration::from_secs(20))
            .success()
    );
    // What the restart finds on disk is bounded the same way.
    let server = ServerProcess::spawn(binary(), &args);
    check_bounded(server.base(), &first).await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
