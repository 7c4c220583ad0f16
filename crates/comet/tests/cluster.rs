//! Several `comet serve --redis` nodes on one real `redis-server`: what a
//! client sees is what one server gives, whichever node each request
//! reaches.

use comet_testkit::node::EventSourceClient;
use comet_testkit::{
    AnswerLosingProxy, Losing, NdjsonStream, RedisServer, ServerProcess, SseStream, client, encode,
    get_json, within,
};
use serde_json::Value;
use std::path::Path;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_comet"))
}

/// A node on `redis`, once it serves (it listens before Redis answers).
async fn node(redis: &RedisServer) -> ServerProcess {
    node_with(redis, &[]).await
}

/// [`node`] with more options.
async fn node_with(redis: &RedisServer, options: &[&str]) -> ServerProcess {
    let url = redis.url();
    let mut args = vec!["--redis", &url];
    args.extend_from_slice(options);
    ready(ServerProcess::spawn(binary(), &args)).await
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

/// An NDJSON stream of `channel` on `base`, once it is open.
async fn open_ndjson(http: &reqwest::Client, base: &str, channel: &str) -> NdjsonStream {
    let response = http.get(format!("{base}/stream/{channel}")).send().await;
    let mut stream = NdjsonStream::new(response.expect("the stream's answer"));
    within("the stream to open", stream.next_value()).await;
    stream
}

/// An SSE stream of `channel` on `base`, once it is open.
async fn open_sse(http: &reqwest::Client, base: &str, channel: &str) -> SseStream {
    let response = http.get(format!("{base}/sse/{channel}")).send().await;
    let mut stream = SseStream::new(response.expect("the stream's answer"));
    within("the SSE stream to open", stream.opening_id()).await;
    stream
}

/// A long poll of `news` on `base` from `since`, waiting up to 30 s (longer
/// than any wait of a test: an answer with a message came from a publish),
/// once the node counts it as parked. It goes on a connection of its own:
/// one the client's pool had used for another route (`/metrics`) is served
/// by the router for the rest of its life, where a long poll waits without
/// parking.
async fn long_poll_parked(
    http: &reqwest::Client,
    base: &str,
    since: &str,
) -> tokio::task::JoinHandle<Value> {
    let poll = {
        let own = client();
        let url = format!("{base}/poll/news?since={}&wait=30", encode(since));
        tokio::spawn(async move { get_json(&own, &url).await })
    };
    comet_testkit::wait_for_metric(http, base, "comet_parked_polls 1").await;
    poll
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
    let mut sse_on_b = open_sse(&http, b.base(), "news").await;
    let mut ndjson_on_a = open_ndjson(&http, a.base(), "news,sport").await;

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
    let poll = long_poll_parked(&http, b.base(), &start).await;
    let id = publish(&http, a.base(), "news", "after").await;
    let answer = within("the parked poll's answer", poll).await.unwrap();
    assert_eq!(answer["messages"][0]["data"], "after");
    assert_eq!(answer["messages"][0]["id"].as_str(), Some(id.as_str()));
}

/// Publishes `data` on `base` until it is stored: while the nodes move to
/// a new history, a publish may be refused (503, nothing stored).
async fn publish_until_stored(base: &str, data: &str) -> String {
    let publisher = comet_client::Client::new(base)
        .unwrap()
        .with_publish_retries(200)
        .with_publish_retry_delay(std::time::Duration::from_millis(25));
    within(
        "a publish to be stored",
        publisher.publish("news", data.to_string()),
    )
    .await
    .expect("stored once the node serves the new history")
    .id
}

/// Redis loses its data under two running nodes, first by `FLUSHALL`, then
/// by a restart without persistence: each time every open subscription on
/// every node (SSE on one, NDJSON on the other) gets a `reset` gap and then
/// the new history's messages, under a new epoch; nothing stalls, and both
/// nodes stay healthy. Heartbeats are rarer than the test's longest wait,
/// so a stream that is idle when the history goes is woken by the reset,
/// not by its next heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_lost_in_redis_is_a_reset_gap_everywhere_then_goes_on() {
    let mut redis = RedisServer::start();
    let a = node_with(&redis, &["--heartbeat", "60s"]).await;
    let b = node_with(&redis, &["--heartbeat", "60s"]).await;
    let http = client();
    let mut sse_on_a = open_sse(&http, a.base(), "news").await;
    let mut stream_on_b = open_ndjson(&http, b.base(), "news").await;
    let mut previous = publish(&http, a.base(), "news", "before").await;
    assert_eq!(sse_on_a.events(1).await[0].data, "before");
    assert_eq!(stream_on_b.next_item().await.unwrap()["data"], "before");
    let epoch = |id: &str| id.split_once('-').map(|(epoch, _)| epoch.to_string());

    for (round, lose) in ["FLUSHALL", "restart"].into_iter().enumerate() {
        // A long poll parked on A is let go and answers the reset.
        let poll = long_poll_parked(&http, a.base(), &previous).await;
        if lose == "FLUSHALL" {
            assert_eq!(redis.command(&["FLUSHALL"]), "+OK");
        } else {
            redis.kill();
            redis.start_again();
        }
        let answer = within("the parked poll's answer", poll).await.unwrap();
        assert_eq!(answer["gaps"][0]["reason"], "reset", "{answer}");
        let data = format!("after {lose}");
        let id = publish_until_stored(b.base(), &data).await;
        assert_ne!(epoch(&id), epoch(&previous), "a new history, a new epoch");

        let events = sse_on_a.events(2).await;
        assert_eq!(events[0].event, "comet-gap", "{events:?}");
        assert!(events[0].data.contains("\"reset\""), "{events:?}");
        assert_eq!(
            (events[1].data.as_str(), events[1].id.as_str()),
            (data.as_str(), id.as_str())
        );
        let gap = stream_on_b.next_item().await.unwrap();
        assert_eq!(gap["gap"]["reason"], "reset", "{gap}");
        let line = stream_on_b.next_item().await.unwrap();
        assert_eq!(
            (line["data"].as_str(), line["id"].as_str()),
            (Some(data.as_str()), Some(id.as_str()))
        );

        for node in [&a, &b] {
            let health = http
                .get(format!("{}/healthz", node.base()))
                .send()
                .await
                .unwrap();
            assert_eq!(health.status(), 200);
            let text = comet_testkit::metrics(&http, node.base()).await;
            assert_eq!(
                comet_testkit::metric_value(&text, "comet_redis_epoch_resets_total"),
                round as u64 + 1,
                "{text}"
            );
        }
        // A client coming back with an id of the lost history is told too.
        let url = format!("{}/poll/news?since={}", a.base(), encode(&previous));
        let answer = get_json(&http, &url).await;
        assert_eq!(answer["gaps"][0]["reason"], "reset", "{answer}");
        assert_eq!(
            answer["messages"][0]["id"].as_str(),
            Some(id.as_str()),
            "{answer}"
        );
        previous = id;
    }
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
    let mut stream = open_ndjson(&http, a.base(), "news").await;
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
    let text = comet_testkit::metrics(&http, a.base()).await;
    let errors = "comet_redis_errors_total{kind=\"connection\"}";
    assert!(comet_testkit::metric_value(&text, errors) >= 1, "{text}");
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
        streams.push(open_sse(&http, base, "news").await);
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
    let mut stream = open_ndjson(&http, b.base(), "news").await;
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

/// A node that falls behind by more than the shared log holds (paused
/// while another publishes) skips ahead and stays healthy; its open streams
/// read what it skipped from each channel's history: exactly, or with a
/// `trimmed` gap where retention removed messages meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_whole_log_catches_up_from_each_channels_history() {
    let redis = RedisServer::start();
    let args = [
        "--redis",
        &redis.url(),
        "--redis-log-length",
        "10",
        "--retention-messages",
        "300",
    ];
    let a = ready(ServerProcess::spawn(binary(), &args)).await;
    let b = ready(ServerProcess::spawn(binary(), &args)).await;
    let http = client();
    let mut news_on_b = open_sse(&http, b.base(), "news").await;
    let mut other_on_b = open_ndjson(&http, b.base(), "other").await;
    publish(&http, a.base(), "news", "m0").await;
    assert_eq!(news_on_b.events(1).await[0].data, "m0");

    b.signal("STOP");
    let mut other_ids = Vec::new();
    for i in 1..600 {
        publish(&http, a.base(), "news", &format!("m{i}")).await;
        if i % 6 == 0 {
            let data = format!("o{}", other_ids.len());
            other_ids.push((data.clone(), publish(&http, a.base(), "other", &data).await));
        }
    }
    b.signal("CONT");

    for (data, id) in &other_ids {
        let line = other_on_b.next_item().await.unwrap();
        assert!(line.get("gap").is_none(), "{line}");
        assert_eq!(
            (line["data"].as_str(), line["id"].as_str()),
            (Some(data.as_str()), Some(id.as_str()))
        );
    }
    // What B's feed had read before it was paused (a message or a few)
    // comes first; then the gap retention made; then what it kept.
    let mut received = Vec::new();
    while received.last().map(String::as_str) != Some("m599") {
        let event = news_on_b.events(1).await.remove(0);
        if event.event == "comet-gap" {
            assert!(event.data.contains("\"trimmed\""), "{event:?}");
            received.push("gap".to_string());
        } else {
            received.push(event.data);
        }
    }
    let before_gap = received
        .iter()
        .position(|data| data == "gap")
        .expect("a gap");
    let expected: Vec<String> = (1..=before_gap)
        .map(|i| format!("m{i}"))
        .chain(["gap".to_string()])
        .chain((300..600).map(|i| format!("m{i}")))
        .collect();
    assert_eq!(received, expected);

    let health = http
        .get(format!("{}/healthz", b.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let text = comet_testkit::metrics(&http, b.base()).await;
    assert!(
        comet_testkit::metric_value(&text, "comet_redis_feed_skips_total") >= 1,
        "{text}"
    );
    // And it goes on live.
    publish(&http, a.base(), "news", "live").await;
    assert_eq!(news_on_b.events(1).await[0].data, "live");
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

/// A node is killed (`kill -9`) under a real `EventSource` client (npm
/// `eventsource`) that reaches it through a load balancer: the balancer
/// sends the client's reconnection to the other node, which resumes it
/// from its `Last-Event-ID` exactly, nothing missing, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eventsource_client_of_a_killed_node_resumes_exactly_on_another() {
    let redis = RedisServer::start();
    let a = node(&redis).await;
    let b = node(&redis).await;
    let http = client();
    let balancer = AnswerLosingProxy::start(a.address().parse().unwrap(), Losing::Nothing).await;
    let mut eventsource = EventSourceClient::start(&format!("{}/sse/news", balancer.base()), 10);
    eventsource.opened().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(publish(&http, a.base(), "news", &format!("m{i}")).await);
    }
    for (i, id) in ids.iter().enumerate() {
        let event = eventsource.next_event().await;
        assert_eq!(event["data"], format!("m{i}"), "{event}");
        assert_eq!(event["lastEventId"].as_str(), Some(id.as_str()));
    }

    a.signal("KILL");
    balancer.route_to(b.address().parse().unwrap());
    for i in 5..10 {
        ids.push(publish(&http, b.base(), "news", &format!("m{i}")).await);
    }
    for (i, id) in ids.iter().enumerate().skip(5) {
        let event = eventsource.next_event().await;
        assert_eq!(event["type"], "message", "{event}");
        assert_eq!(event["data"], format!("m{i}"), "{event}");
        assert_eq!(event["lastEventId"].as_str(), Some(id.as_str()));
    }
    assert!(eventsource.finished().await, "the client saw all ten");
}

/// Redis stops answering (paused with `SIGSTOP`): a publish answers 503
/// within the node's response timeout, `/healthz` answers 503, an open
/// stream stays open with heartbeats. When Redis answers again, everything
/// goes on by itself: the refused publish, retried with its idempotency key,
/// is stored once (Redis may have run the first attempt when it woke), and
/// the stream receives every message once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_is_ridden_out() {
    let redis = RedisServer::start();
    let a = ready(ServerProcess::spawn(
        binary(),
        &["--redis", &redis.url(), "--heartbeat", "1s"],
    ))
    .await;
    let http = client();
    let mut stream = open_ndjson(&http, a.base(), "news").await;
    let first = publish(&http, a.base(), "news", "m0").await;
    assert_eq!(
        stream.next_item().await.unwrap()["id"].as_str(),
        Some(first.as_str())
    );

    redis.signal("STOP");
    let keyed = |data: &str| {
        http.post(format!("{}/pub/news", a.base()))
            .header("Idempotency-Key", "paused-1")
            .body(data.to_string())
            .send()
    };
    let refused = within("the publish to be refused", keyed("m1"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"], "store_unavailable", "{error}");
    let text = comet_testkit::metrics(&http, a.base()).await;
    let timeouts = "comet_redis_errors_total{kind=\"timeout\"}";
    assert!(comet_testkit::metric_value(&text, timeouts) >= 1, "{text}");
    let health = http
        .get(format!("{}/healthz", a.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    for _ in 0..2 {
        let line = within("a heartbeat while Redis is paused", stream.next_value())
            .await
            .expect("the stream stays open");
        assert!(line.get("heartbeat").is_some(), "{line}");
    }

    redis.signal("CONT");
    let id = within("the retried publish to be stored", async {
        loop {
            let answer = keyed("m1").await.unwrap();
            if answer.status() == 200 {
                let answer: Value = answer.json().await.unwrap();
                return answer["id"].as_str().unwrap().to_string();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let last = publish(&http, a.base(), "news", "m2").await;
    for (data, id) in [("m1", &id), ("m2", &last)] {
        let line = stream.next_item().await.unwrap();
        assert!(line.get("gap").is_none(), "{line}");
        assert_eq!(
            (line["data"].as_str(), line["id"].as_str()),
            (Some(data), Some(id.as_str()))
        );
    }
}
