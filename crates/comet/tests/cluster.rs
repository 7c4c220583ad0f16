//! Several `comet serve --redis` nodes on one real `redis-server`: what a
//! client sees is what one server gives, whichever node each request
//! reaches.

use comet_testkit::{
    NdjsonStream, RedisServer, ServerProcess, SseStream, client, encode, get_json, within,
};
use serde_json::Value;
use std::path::Path;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_comet"))
}

/// A node on `redis`, once it serves (it listens before Redis answers).
async fn node(redis: &RedisServer) -> ServerProcess {
    ready(ServerProcess::spawn(binary(), &["--redis", &redis.url()])).await
}

/// `node`, once its `/healthz` answers 200.
async fn ready(node: ServerProcess) -> ServerProcess {
    let http = client();
    within("the node to serve", async {
        loop {
            if let Ok(health) = http.get(format!("{}/healthz", node.base())).send().await
                && health.status() == 200
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    node
}

async fn publish(http: &reqwest::Client, base: &str, channel: &str, data: &str) -> String {
    let answer: Value = http
        .post(format!("{base}/pub/{channel}"))
        .body(data.to_string())
        .send()
        .await
        .expect("publish")
        .json()
        .await
        .expect("a JSON answer");
    answer["id"].as_str().expect("an id").to_string()
}

/// Publishes on both nodes reach subscribers on both, once each, in one
/// order with the same ids everywhere; a cursor from one node resumes
/// exactly on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_on_either_node_reach_subscribers_on_both_in_one_order() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let b = node(&redis).await;
    let http = client();
    let mut sse_on_b = SseStream::new(
        http.get(format!("{}/sse/news", b.base()))
            .send()
            .await
            .unwrap(),
    );
    within("the SSE stream to open", sse_on_b.opening_id()).await;
    let mut ndjson_on_a = NdjsonStream::new(
        http.get(format!("{}/stream/news,sport", a.base()))
            .send()
            .await
            .unwrap(),
    );
    within("the NDJSON stream to open", ndjson_on_a.next_value()).await;

    let mut ids = Vec::new();
    for i in 0..100 {
        let (base, channel) = match i % 4 {
            0 => (a.base(), "news"),
            1 => (b.base(), "news"),
            2 => (a.base(), "sport"),
            _ => (b.base(), "sport"),
        };
        let id = publish(&http, base, channel, &format!("m{i}")).await;
        ids.push((channel, format!("m{i}"), id));
    }
    let news: Vec<&(&str, String, String)> = ids.iter().filter(|(c, _, _)| *c == "news").collect();
    let events = within("every news message on B", sse_on_b.events(news.len())).await;
    for (event, (_, data, id)) in events.iter().zip(&news) {
        assert_eq!(
            (&event.data, &event.id),
            (data, id),
            "B's SSE, in order, same ids"
        );
    }
    for (_, data, id) in &ids {
        let line = within("every message on A", ndjson_on_a.next_item())
            .await
            .expect("a line");
        assert_eq!(line["data"].as_str(), Some(data.as_str()));
        assert_eq!(line["id"].as_str(), Some(id.as_str()));
    }

    // A cursor handed out by A resumes exactly on B.
    let (_, _, middle) = &ids[49];
    let url = format!(
        "{}/poll/news,sport?since={}&backlog=0",
        b.base(),
        encode(middle)
    );
    let resumed = get_json(&http, &url).await;
    let data: Vec<&str> = resumed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = ids[50..].iter().map(|(_, d, _)| d.as_str()).collect();
    assert_eq!(data, expected);
}

/// A long poll parked on B is answered by a publish on A (its wait, 30 s,
/// is longer than any wait of the test: an answer with the message came
/// from the publish).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_node_is_answered_by_a_publish_on_the_other() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let b = node(&redis).await;
    let http = client();
    let start = publish(&http, a.base(), "news", "before").await;
    // B has heard of it (a long poll from a cursor B has not heard of yet
    // waits too, but not as a parked poll, which is what this test counts).
    within("B to hear of the first message", async {
        while comet_testkit::retained(&http, b.base(), "news")
            .await
            .is_empty()
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let poll = {
        let http = http.clone();
        let url = format!("{}/poll/news?since={}&wait=30", b.base(), encode(&start));
        tokio::spawn(async move { get_json(&http, &url).await })
    };
    // Usually the poll is parked before the publish (counted by B). Under
    // load it sometimes waits without being counted (see the issue note):
    // the publish then goes ahead after 2 s, and the poll must still be
    // answered by it.
    let parked = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        comet_testkit::wait_for_metric(&http, b.base(), "comet_parked_polls 1"),
    )
    .await;
    if parked.is_err() {
        eprintln!("the poll on B was not counted as parked within 2 s");
    }
    let id = publish(&http, a.base(), "news", "after").await;
    let answer = within("the parked poll's answer", poll).await.unwrap();
    assert_eq!(answer["messages"][0]["data"], "after");
    assert_eq!(answer["messages"][0]["id"].as_str(), Some(id.as_str()));
}

/// Redis loses its data under running nodes: they refuse to publish (503)
/// and report themselves unhealthy rather than mix the new history's
/// messages into the old one's ids; a node started afterwards serves the
/// new history, under a new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_whose_history_was_lost_refuse_rather_than_mix_histories() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let http = client();
    let mut sse_on_a = SseStream::new(
        http.get(format!("{}/sse/news", a.base()))
            .send()
            .await
            .unwrap(),
    );
    within("the SSE stream to open", sse_on_a.opening_id()).await;
    let before = publish(&http, a.base(), "news", "before").await;
    assert_eq!(
        within("the first message", sse_on_a.events(1)).await[0].data,
        "before"
    );

    assert_eq!(redis.command(&["FLUSHALL"]), "+OK");
    let refused = http
        .post(format!("{}/pub/news", a.base()))
        .body("lost")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    within("node A to report itself unhealthy", async {
        loop {
            let health = http
                .get(format!("{}/healthz", a.base()))
                .send()
                .await
                .unwrap();
            if health.status() == 503 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;

    let text = comet_testkit::metrics(&http, a.base()).await;
    assert_eq!(
        comet_testkit::metric_value(&text, "comet_redis_history_lost"),
        1,
        "{text}"
    );
    let c = node(&redis).await;
    let after = publish(&http, c.base(), "news", "new history").await;
    // Beyond A's old head too: a feed that went on would take it for the
    // next message of the old history.
    publish(&http, c.base(), "news", "new history, again").await;
    let epoch = |id: &str| id.split_once('-').map(|(epoch, _)| epoch.to_string());
    assert_ne!(epoch(&after), epoch(&before), "a new history, a new epoch");
    // A's subscriber is not handed the new history's message under the
    // old history's ids: its next event is nothing within a second.
    let next = tokio::time::timeout(std::time::Duration::from_secs(1), sse_on_a.events(1)).await;
    assert!(next.is_err(), "node A delivered {next:?}");
}

/// Redis goes away under a serving node and comes back with its data
/// (`appendfsync always`): meanwhile publishes answer 503 and an open
/// stream stays open with heartbeats; afterwards publishing resumes by
/// itself and the stream receives the next messages, the history
/// continuing exactly (same epoch, next sequence numbers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rides_out_a_redis_restart_with_its_data() {
    let mut redis = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let a = ready(ServerProcess::spawn(
        binary(),
        &["--redis", &redis.url(), "--heartbeat", "200ms"],
    ))
    .await;
    let http = client();
    let mut stream = NdjsonStream::new(
        http.get(format!("{}/stream/news", a.base()))
            .send()
            .await
            .unwrap(),
    );
    within("the stream to open", stream.next_value()).await;
    let first = publish(&http, a.base(), "news", "before").await;
    let line = within("the first message", stream.next_item())
        .await
        .expect("a line");
    assert_eq!(line["data"], "before");

    redis.kill();
    let refused = within(
        "a publish while Redis is down",
        http.post(format!("{}/pub/news", a.base()))
            .body("while down")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 503);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"], "store_unavailable");
    // The stream is still open: heartbeats keep coming.
    for _ in 0..2 {
        let beat = within("a heartbeat while Redis is down", stream.next_value())
            .await
            .expect("the stream stays open");
        assert_eq!(beat["heartbeat"], true, "{beat}");
    }

    redis.start_again();
    let next = within("publishing to resume", async {
        loop {
            let answer = http
                .post(format!("{}/pub/news", a.base()))
                .body("after")
                .send()
                .await
                .unwrap();
            if answer.status() == 201 {
                let answer: Value = answer.json().await.unwrap();
                return answer["id"].as_str().unwrap().to_string();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let seq = |id: &str| -> (String, u64) {
        let position = id.split('/').next().unwrap();
        let (epoch, seq) = position.rsplit_once('-').unwrap();
        (epoch.to_string(), seq.parse().unwrap())
    };
    let (epoch_before, seq_before) = seq(&first);
    let (epoch_after, seq_after) = seq(&next);
    assert_eq!(epoch_after, epoch_before, "the same history");
    assert_eq!(
        seq_after,
        seq_before + 1,
        "nothing was stored while Redis was down"
    );
    let line = within("the message after the restart", stream.next_item())
        .await
        .expect("the stream is still open");
    assert_eq!(line["data"], "after");
    assert_eq!(line["id"].as_str(), Some(next.as_str()));
}

/// A node started before its Redis listens at once and answers every
/// request `503 store_unavailable` (health checks included) while it waits
/// for Redis, saying so in its log; it serves once Redis is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_waits_for_redis_at_start() {
    let mut redis = RedisServer::start();
    redis.kill();
    let log = std::env::temp_dir().join(format!("comet-wait-for-redis-{}.log", std::process::id()));
    let mut command = std::process::Command::new(binary());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", &redis.url()])
        .env("COMET_LOG", "warn")
        .stderr(std::fs::File::create(&log).unwrap());
    let a = ServerProcess::spawn_command(command);
    let http = client();
    for (method, path) in [
        ("GET", "/healthz"),
        ("POST", "/pub/news"),
        ("GET", "/sse/news"),
    ] {
        let answer = http
            .request(method.parse().unwrap(), format!("{}{path}", a.base()))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 503, "{method} {path}");
        let error: Value = answer.json().await.unwrap();
        assert_eq!(error["error"], "store_unavailable", "{method} {path}");
    }
    within("the node to say it waits for Redis", async {
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Redis cannot be reached; waiting for it") {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    redis.start_again();
    within("the node to serve once Redis is up", async {
        loop {
            if let Ok(health) = http.get(format!("{}/healthz", a.base())).send().await
                && health.status() == 200
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let id = publish(&http, a.base(), "news", "hello").await;
    assert!(id.ends_with("-1/news"), "{id}");
    let _ = std::fs::remove_file(&log);
}

/// `subscribers` counts every live node's subscribers (shared about once
/// a second), in publish answers and in `GET /channels/{channel}`; a
/// killed node's stop counting within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_counts_cover_every_live_node() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let b = node(&redis).await;
    let http = client();
    let mut streams = Vec::new();
    for base in [a.base(), b.base(), b.base()] {
        let mut stream = SseStream::new(http.get(format!("{base}/sse/news")).send().await.unwrap());
        within("a stream to open", stream.opening_id()).await;
        streams.push(stream);
    }
    let count_on_a = || {
        let http = http.clone();
        let url = format!("{}/channels/news", a.base());
        async move {
            let info = get_json(&http, &url).await;
            info["subscribers"].as_u64()
        }
    };
    publish(&http, a.base(), "news", "make the channel exist").await;
    within("A to count B's subscribers", async {
        while count_on_a().await != Some(3) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let answer: Value = http
        .post(format!("{}/pub/news", a.base()))
        .body("counted")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["subscribers"], 3, "{answer}");

    b.signal("KILL");
    within("A to stop counting the killed node", async {
        while count_on_a().await != Some(1) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// Every Redis connection of both nodes is killed while one node publishes
/// and the other streams: the publisher's retries (with their idempotency
/// keys) store each message once, and the stream on the other node
/// catches up from Redis with no gap and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_connections_lose_and_repeat_nothing() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let b = node(&redis).await;
    let http = client();
    let mut stream = NdjsonStream::new(
        http.get(format!("{}/stream/news", b.base()))
            .send()
            .await
            .unwrap(),
    );
    within("the stream to open", stream.next_value()).await;
    let publisher = comet_client::Client::new(a.base())
        .unwrap()
        .with_publish_retries(50)
        .with_publish_retry_delay(std::time::Duration::from_millis(10));
    let mut ids = Vec::new();
    for i in 0..300 {
        if i == 100 || i == 200 {
            let killed = redis.command(&["CLIENT", "KILL", "TYPE", "normal"]);
            let count: u32 = killed.trim_start_matches(':').parse().unwrap_or(0);
            // The nodes' feeds and command connections (a connection that
            // is reconnecting at that moment is not there to kill).
            assert!(count >= 2, "killed {killed}");
        }
        let published = within("a publish", publisher.publish("news", format!("m{i}")))
            .await
            .expect("published despite the killed connections");
        ids.push(published.id);
    }
    for (i, id) in ids.iter().enumerate() {
        let line = within("every message on B", stream.next_item())
            .await
            .expect("a line");
        assert!(line.get("gap").is_none(), "{line}");
        assert_eq!(line["data"].as_str(), Some(format!("m{i}").as_str()));
        assert_eq!(line["id"].as_str(), Some(id.as_str()));
    }
}

/// A node that falls behind by more than the shared log holds (paused while
/// another publishes) stops and reports itself unhealthy rather than
/// deliver with a hole; once restarted, its clients resume exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_whole_log_stops_rather_than_skip() {
    let redis = RedisServer::start();
    let args = ["--redis", &redis.url(), "--redis-log-length", "10"];
    let a = ready(ServerProcess::spawn(binary(), &args)).await;
    let b = ready(ServerProcess::spawn(binary(), &args)).await;
    let http = client();
    let first = publish(&http, a.base(), "news", "m0").await;
    b.signal("STOP");
    for i in 1..1000 {
        publish(&http, a.base(), "news", &format!("m{i}")).await;
    }
    b.signal("CONT");
    within("B to report itself unhealthy", async {
        loop {
            let text = comet_testkit::metrics(&http, b.base()).await;
            if comet_testkit::metric_value(&text, "comet_redis_history_lost") == 1 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let health = http
        .get(format!("{}/healthz", b.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);

    // A node started afterwards serves everything from the same ids.
    let c = ready(ServerProcess::spawn(binary(), &args)).await;
    let url = format!("{}/poll/news?since={}", c.base(), encode(&first));
    let answer = get_json(&http, &url).await;
    assert_eq!(answer["messages"][0]["data"], "m1", "{answer}");
}

/// `rediss://`: a node talks to a Redis that speaks only TLS, verifying
/// its certificate (here against a private CA named by `SSL_CERT_FILE`);
/// a certificate it cannot verify stops it with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reaches_redis_over_verified_tls() {
    let redis = RedisServer::start_tls();
    let url = format!("rediss://127.0.0.1:{}", redis.port());
    let ca = redis.dir().join("ca.pem");
    let mut command = std::process::Command::new(binary());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", &url])
        .env("SSL_CERT_FILE", &ca)
        .env("COMET_LOG", "error");
    let a = ready(ServerProcess::spawn_command(command)).await;
    let http = client();
    let id = publish(&http, a.base(), "news", "over TLS").await;
    assert!(id.ends_with("-1/news"), "{id}");

    // Without the CA, the certificate cannot be verified: the node says so
    // and exits, instead of waiting for a Redis that is there.
    let refused = within(
        "the node to exit",
        tokio::process::Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--redis", &url])
            .env_remove("SSL_CERT_FILE")
            .env("COMET_LOG", "error")
            .output(),
    )
    .await
    .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("certificate") || stderr.contains("Certificate"),
        "{stderr}"
    );
}
