//! The durable store through the real binary: `kill -9` while publishers
//! publish, again and again, loses nothing acknowledged; subscribers on
//! every transport resume exactly across a restart; the npm `eventsource`
//! client reconnects by itself and loses nothing; one server per directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use comet_testkit::node::EventSourceClient;
use comet_testkit::{
    AnswerLosingProxy, Losing, NdjsonStream, ServerProcess, SseStream, client, encode, get_json,
    within,
};
use serde_json::Value;
use tokio::sync::Notify;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_comet"))
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The position part of an id (`{epoch}-{seq}` of `{epoch}-{seq}/{channel}`).
fn position(id: &str) -> &str {
    id.split_once('/').map_or(id, |(position, _)| position)
}

fn seq_of(id: &str) -> u64 {
    position(id)
        .rsplit_once('-')
        .and_then(|(_, seq)| seq.parse().ok())
        .expect("an id")
}

fn epoch_of(id: &str) -> &str {
    position(id).rsplit_once('-').expect("an id").0
}

/// Every retained message of `channel`, as `(id, data)`, paging by cursor.
async fn history(base: &str, channel: &str, epoch: &str) -> Vec<(String, String)> {
    let http = client();
    let mut cursor = format!("{epoch}-0");
    let mut all = Vec::new();
    loop {
        let url = format!("{base}/poll/{channel}?since={}", encode(&cursor));
        let answer = get_json(&http, &url).await;
        assert!(
            answer.get("gaps").is_none(),
            "no gap in a history that keeps everything"
        );
        let messages = answer["messages"].as_array().expect("messages");
        if messages.is_empty() {
            return all;
        }
        for message in messages {
            all.push((
                message["id"].as_str().unwrap().to_string(),
                message["data"].as_str().unwrap().to_string(),
            ));
        }
        cursor = answer["cursor"].as_str().unwrap().to_string();
    }
}

/// Acknowledged publishes, by channel, in acknowledgement order per writer.
#[derive(Default)]
struct Acknowledged {
    by_data: Mutex<HashMap<String, (String, String)>>,
    count: AtomicUsize,
    grew: Notify,
}

const CHANNELS: [&str; 4] = ["k0", "k1", "k2", "k3"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kill_nines_under_concurrent_publishers_lose_nothing_acknowledged() {
    let dir = fresh_dir("kill-nine");
    let dir_arg = dir.to_str().unwrap().to_string();
    let args = [
        "--data-dir",
        dir_arg.as_str(),
        "--retention-messages",
        "1000000",
        "--max-store-bytes",
        "0",
    ];
    let acknowledged = Arc::new(Acknowledged::default());
    let mut epoch: Option<String> = None;
    let mut last_seq = 0;
    for round in 0..21 {
        let server = ServerProcess::spawn(binary(), &args);
        // Everything acknowledged so far is there, once, in order.
        if let Some(epoch) = &epoch {
            verify(server.base(), epoch, &acknowledged).await;
        }
        if round == 20 {
            break;
        }
        let target = acknowledged.count.load(Ordering::SeqCst) + 120;
        let mut writers = Vec::new();
        for writer in 0..8 {
            let base = server.base().to_string();
            let acknowledged = acknowledged.clone();
            writers.push(tokio::spawn(async move {
                let http = client();
                for n in 0.. {
                    let channel = CHANNELS[(writer + n) % CHANNELS.len()];
                    let data = format!("r{round}-w{writer}-n{n}");
                    let sent = http
                        .post(format!("{base}/pub/{channel}"))
                        .body(data.clone())
                        .send()
                        .await;
                    // The server was killed: what was not acknowledged
                    // may or may not be stored; it is not counted.
                    let Ok(response) = sent else { return };
                    if response.status() != 201 {
                        return;
                    }
                    let Ok(answer) = response.json::<Value>().await else {
                        return;
                    };
                    let id = answer["id"].as_str().unwrap().to_string();
                    acknowledged
                        .by_data
                        .lock()
                        .unwrap()
                        .insert(data, (channel.to_string(), id));
                    acknowledged.count.fetch_add(1, Ordering::SeqCst);
                    acknowledged.grew.notify_waiters();
                }
            }));
        }
        within("publishes to be acknowledged", async {
            loop {
                let grew = acknowledged.grew.notified();
                if acknowledged.count.load(Ordering::SeqCst) >= target {
                    return;
                }
                grew.await;
            }
        })
        .await;
        // Kill while the writers are still publishing.
        server.signal("KILL");
        for writer in writers {
            within("a writer to notice the kill", writer).await.unwrap();
        }
        drop(server);
        let by_data = acknowledged.by_data.lock().unwrap();
        let epochs: Vec<&str> = by_data.values().map(|(_, id)| epoch_of(id)).collect();
        let first_epoch = epochs[0].to_string();
        assert!(
            epochs.iter().all(|e| *e == first_epoch),
            "one epoch across restarts"
        );
        let newest = by_data.values().map(|(_, id)| seq_of(id)).max().unwrap();
        assert!(newest > last_seq, "ids keep growing across restarts");
        last_seq = newest;
        epoch = Some(first_epoch);
    }
    assert!(acknowledged.count.load(Ordering::SeqCst) >= 20 * 120);
}

async fn verify(base: &str, epoch: &str, acknowledged: &Acknowledged) {
    let expected = acknowledged.by_data.lock().unwrap().clone();
    let mut found = 0;
    for channel in CHANNELS {
        let stored = history(base, channel, epoch).await;
        let seqs: Vec<u64> = stored.iter().map(|(id, _)| seq_of(id)).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{channel}: ids strictly increase"
        );
        let mut seen = std::collections::HashSet::new();
        for (id, data) in &stored {
            assert!(seen.insert(data.clone()), "{channel}: {data} stored twice");
            if let Some((expected_channel, expected_id)) = expected.get(data) {
                assert_eq!(expected_channel, channel);
                assert_eq!(
                    expected_id, id,
                    "{data} kept the id it was acknowledged with"
                );
                found += 1;
            }
        }
    }
    assert_eq!(
        found,
        expected.len(),
        "every acknowledged message is present"
    );
}

/// Publishes `data` to `channel`, retrying while the server restarts.
async fn publish_retrying(base: &str, channel: &str, data: &str) -> String {
    let http = client();
    within("a publish", async {
        loop {
            if let Ok(response) = http
                .post(format!("{base}/pub/{channel}"))
                .body(data.to_string())
                .send()
                .await
                && response.status() == 201
            {
                let answer: Value = response.json().await.unwrap();
                return answer["id"].as_str().unwrap().to_string();
            }
            // The server is coming back: look again shortly, without
            // spinning.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
}

/// A subscriber that reconnects whenever its connection ends and resumes
/// from the last id it received, until it has `count` messages.
async fn resilient_subscriber(
    base: String,
    transport: &'static str,
    start: String,
    count: usize,
) -> Vec<String> {
    let http = client();
    let mut cursor: Option<String> = Some(start);
    let mut received = Vec::new();
    let backoff = Duration::from_millis(20);
    while received.len() < count {
        let since = cursor
            .as_ref()
            .map(|c| format!("?since={}", encode(c)))
            .unwrap_or_default();
        match transport {
            "sse" => {
                let mut request = http.get(format!("{base}/sse/a,b"));
                if let Some(cursor) = &cursor {
                    request = request.header("Last-Event-ID", cursor);
                }
                let Ok(response) = request.send().await else {
                    tokio::time::sleep(backoff).await;
                    continue;
                };
                let mut stream = SseStream::new(response);
                while let Some(event) = stream.next_event().await {
                    assert_eq!(event.event, "message", "no gap expected");
                    received.push(event.data);
                    cursor = Some(event.id);
                    if received.len() == count {
                        break;
                    }
                }
            }
            "stream" => {
                let Ok(response) = http.get(format!("{base}/stream/a,b{since}")).send().await
                else {
                    tokio::time::sleep(backoff).await;
                    continue;
                };
                let mut stream = NdjsonStream::new(response);
                while let Some(line) = stream.next_item().await {
                    assert!(line.get("gap").is_none(), "no gap expected");
                    received.push(line["data"].as_str().unwrap().to_string());
                    cursor = Some(line["id"].as_str().unwrap().to_string());
                    if received.len() == count {
                        break;
                    }
                }
            }
            _ => {
                let wait = if transport == "longpoll" {
                    "wait=5&"
                } else {
                    ""
                };
                let separator = if since.is_empty() { "?" } else { "&" };
                let url = format!("{base}/poll/a,b{since}{separator}{wait}");
                let Ok(response) = http.get(url).send().await else {
                    tokio::time::sleep(backoff).await;
                    continue;
                };
                let Ok(answer) = response.json::<Value>().await else {
                    tokio::time::sleep(backoff).await;
                    continue;
                };
                assert!(answer.get("gaps").is_none(), "no gap expected");
                for message in answer["messages"].as_array().unwrap() {
                    received.push(message["data"].as_str().unwrap().to_string());
                }
                cursor = answer["cursor"].as_str().map(str::to_string);
                if transport == "poll" {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_on_every_transport_resume_exactly_across_a_crash() {
    let dir = fresh_dir("resume-restart");
    let dir_arg = dir.to_str().unwrap().to_string();
    let args = ["--data-dir", dir_arg.as_str(), "--sse-retry", "50ms"];
    let server = ServerProcess::spawn(binary(), &args);
    let base = server.base().to_string();
    let address = server.address().to_string();

    // "Now", before anything is published: every subscriber starts there.
    let http = client();
    let now = get_json(&http, &format!("{base}/poll/a,b")).await["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let mut subscribers = Vec::new();
    for transport in ["sse", "stream", "poll", "longpoll"] {
        subscribers.push(tokio::spawn(resilient_subscriber(
            base.clone(),
            transport,
            now.clone(),
            114,
        )));
    }

    let mut expected = Vec::new();
    for i in 0..60 {
        let channel = ["a", "b", "c"][i % 3];
        let data = format!("before-{i}");
        publish_retrying(&base, channel, &data).await;
        if channel != "c" {
            expected.push(data);
        }
    }
    server.signal("KILL");
    drop(server);
    let server = ServerProcess::spawn_at(binary(), &address, &args);
    for i in 0..110 {
        let channel = ["a", "b", "c"][i % 3];
        let data = format!("after-{i}");
        publish_retrying(server.base(), channel, &data).await;
        if channel != "c" {
            expected.push(data);
        }
    }
    assert_eq!(expected.len(), 40 + 74);
    for (transport, subscriber) in ["sse", "stream", "poll", "longpoll"]
        .iter()
        .zip(subscribers)
    {
        let received = within("a subscriber", subscriber).await.unwrap();
        assert_eq!(
            received[..expected.len()],
            expected[..],
            "{transport}: exactly the messages, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eventsource_client_reconnects_by_itself_across_a_crash_and_loses_nothing() {
    let dir = fresh_dir("eventsource-restart");
    let dir_arg = dir.to_str().unwrap().to_string();
    let args = ["--data-dir", dir_arg.as_str(), "--sse-retry", "50ms"];
    let server = ServerProcess::spawn(binary(), &args);
    let address = server.address().to_string();
    let mut node = EventSourceClient::start(&format!("{}/sse/news", server.base()), 10);
    node.opened().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(publish_retrying(server.base(), "news", &format!("m{i}")).await);
    }
    for id in &ids {
        assert_eq!(node.next_event().await["lastEventId"], id.as_str());
    }
    server.signal("KILL");
    drop(server);
    let server = ServerProcess::spawn_at(binary(), &address, &args);
    // Published while the client is still reconnecting: it must get them.
    for i in 5..10 {
        ids.push(publish_retrying(server.base(), "news", &format!("m{i}")).await);
    }
    for (i, id) in ids.iter().enumerate().skip(5) {
        let event = node.next_event().await;
        assert_eq!(event["data"], format!("m{i}"));
        assert_eq!(event["lastEventId"], id.as_str());
    }
    assert!(node.finished().await);
}

#[test]
fn a_second_server_on_the_same_directory_refuses_to_start() {
    let dir = fresh_dir("two-servers");
    let dir_arg = dir.to_str().unwrap();
    let first = ServerProcess::spawn(binary(), &["--data-dir", dir_arg]);
    let second = std::process::Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", dir_arg])
        .output()
        .expect("run comet");
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("is in use by another process")
            && stderr.contains(&format!("pid {}", first.pid())),
        "{stderr}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read the directory") {
        let entry = entry.expect("an entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a file");
    }
}

fn stop(mut server: ServerProcess) {
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(20)).success());
}

/// An operator restores the data directory from a backup older than ids
/// its clients hold. The history keeps its epoch but its head goes back,
/// so those ids would name other messages from now on: a client resuming
/// with one is told of a reset and gets what is retained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_ahead_of_a_restored_backup_gets_a_reset_gap() {
    let dir = fresh_dir("restored");
    let backup = fresh_dir("restored-backup");
    let dir_arg = dir.to_str().unwrap().to_string();
    let args = ["--data-dir", dir_arg.as_str()];

    let server = ServerProcess::spawn(binary(), &args);
    publish_retrying(server.base(), "news", "one").await;
    stop(server);
    copy_dir(&dir, &backup);

    let server = ServerProcess::spawn(binary(), &args);
    publish_retrying(server.base(), "news", "two").await;
    let ahead = publish_retrying(server.base(), "news", "three").await;
    stop(server);
    copy_dir(&backup, &dir);

    let server = ServerProcess::spawn(binary(), &args);
    let answer = get_json(
        &client(),
        &format!("{}/poll/news?since={}", server.base(), encode(&ahead)),
    )
    .await;
    assert_eq!(
        answer["gaps"],
        serde_json::json!([{"channel": "news", "reason": "reset"}]),
        "{answer}"
    );
    let data: Vec<&str> = answer["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|message| message["data"].as_str().unwrap())
        .collect();
    assert_eq!(data, ["one"]);
}

/// The epoch of the server at `base`, from a poll's cursor.
async fn current_epoch(base: &str) -> String {
    let answer = get_json(&client(), &format!("{base}/poll/any")).await;
    let cursor = answer["cursor"].as_str().expect("a cursor").to_string();
    epoch_of(&cursor).to_string()
}

/// A publish whose answer was lost, then `kill -9` and a restart before its
/// retry: the retry (the Rust client's own, with its idempotency key) is
/// answered with the original, and the message is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_kill_and_restart_is_answered_with_the_original() {
    let dir = fresh_dir("retry-kill");
    let dir_arg = dir.to_str().unwrap().to_string();
    let args = ["--data-dir", dir_arg.as_str()];
    let server = ServerProcess::spawn(binary(), &args);
    let address = server.address().to_string();
    let epoch = current_epoch(server.base()).await;
    let proxy = AnswerLosingProxy::start(address.parse().unwrap(), Losing::Everything).await;
    let publisher = comet_client::Client::new(&proxy.base())
        .unwrap()
        .with_publish_retries(12)
        .with_publish_retry_delay(Duration::from_millis(20))
        .with_publish_timeout(Duration::from_secs(5));
    let publishing = tokio::spawn(async move {
        publisher
            .publish_with_key("orders", None, "order 42", Some("order-42"))
            .await
    });
    let base = server.base().to_string();
    let stored = within("the publish to be stored", async {
        loop {
            let stored = history(&base, "orders", &epoch).await;
            if !stored.is_empty() {
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    server.signal("KILL");
    drop(server);
    let server = ServerProcess::spawn_at(binary(), &address, &args);
    proxy.lose(Losing::Nothing);
    let published = within("the retried publish", publishing)
        .await
        .unwrap()
        .expect("the retry succeeds");
    assert!(proxy.lost() >= 1, "the first answer was lost");
    assert!(published.duplicate, "answered as a repeat: {published:?}");
    assert_eq!(published.id, stored[0].0, "with the original's id");
    let after = history(server.base(), "orders", &epoch).await;
    assert_eq!(after, stored, "stored once");
}

/// Batches published while the server is killed, again and again: after
/// each restart every batch is all there or not there at all, and every
/// acknowledged batch is all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_all_there_or_not_at_all_across_kill_nines() {
    const BATCH: usize = 200;
    let dir = fresh_dir("batch-kill");
    let dir_arg = dir.to_str().unwrap().to_string();
    let args = [
        "--data-dir",
        dir_arg.as_str(),
        "--retention-messages",
        "1000000",
        "--max-store-bytes",
        "0",
    ];
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut epoch = None;
    for round in 0..4 {
        let server = ServerProcess::spawn(binary(), &args);
        let current = current_epoch(server.base()).await;
        assert_eq!(epoch.get_or_insert(current.clone()), &current);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for channel in CHANNELS {
            for (_, data) in history(server.base(), channel, &current).await {
                let (batch, _) = data.split_once(':').expect("batch:item");
                *counts.entry(batch.to_string()).or_default() += 1;
            }
        }
        for (batch, count) in &counts {
            assert_eq!(*count, BATCH, "batch {batch} is whole or absent");
        }
        for batch in acknowledged.lock().unwrap().iter() {
            assert!(
                counts.contains_key(batch),
                "acknowledged batch {batch} is there"
            );
        }
        if round == 3 {
            break;
        }
        let target = acknowledged.lock().unwrap().len() + 10;
        let mut writers = Vec::new();
        for writer in 0..3 {
            let base = server.base().to_string();
            let acknowledged = acknowledged.clone();
            writers.push(tokio::spawn(async move {
                let http = client();
                for n in 0.. {
                    let name = format!("r{round}w{writer}b{n}");
                    let items: Vec<Value> = (0..BATCH)
                        .map(|i| {
                            let channel = CHANNELS[i % CHANNELS.len()];
                            serde_json::json!({"channel": channel, "data": format!("{name}:{i}")})
                        })
                        .collect();
                    let sent = http
                        .post(format!("{base}/pub"))
                        .json(&serde_json::json!({ "messages": items }))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 201 => {
                            acknowledged.lock().unwrap().push(name);
                        }
                        _ => return,
                    }
                }
            }));
        }
        within("batches to be acknowledged", async {
            while acknowledged.lock().unwrap().len() < target {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        server.signal("KILL");
        for writer in writers {
            within("a writer to notice the kill", writer).await.unwrap();
        }
        drop(server);
    }
    assert!(acknowledged.lock().unwrap().len() >= 30);
}
