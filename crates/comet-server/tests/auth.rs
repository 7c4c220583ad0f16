//! Authorization on every route and transport, against the real server:
//! API keys and JWTs, public channels, 401 and 403, the three places a
//! token can be, expiry of open subscriptions and their revocation by a
//! change of the rules, and the safe default.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comet_server::comet_auth::{
    ApiKeys, Authorizer, ChannelPattern, IpNet, JwtVerifier, loopback, read_secret,
};
use comet_testkit::{NdjsonStream, SseStream, TestServer, client, encode, raw, within};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "a-test-secret-of-at-least-32-bytes";
const KEY_NEWS: &str = "news-publisher-key-001";
const KEY_ALL: &str = "all-channels-key-00001";

fn files() -> (PathBuf, PathBuf) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "comet-auth-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let keys = dir.join("keys");
    std::fs::write(&keys, format!("# test keys\n{KEY_NEWS} news\n{KEY_ALL}\n")).unwrap();
    (secret, keys)
}

/// A server with API keys, HS256 JWTs (checked for issuer and audience
/// when asked), and `lobby` public.
fn server(issuer: Option<&str>, audience: Option<&str>) -> TestServer {
    server_with(issuer, audience, |_| {})
}

/// [`server`], with `change` made to its configuration.
fn server_with(
    issuer: Option<&str>,
    audience: Option<&str>,
    change: impl FnOnce(&mut comet_server::ServerConfig),
) -> TestServer {
    let (secret, keys) = files();
    let verifier = JwtVerifier::new(vec![read_secret(&secret).unwrap()], issuer, audience);
    let rules = Authorizer::new(
        ApiKeys::read(&keys).unwrap(),
        Some(verifier),
        vec![ChannelPattern::parse("lobby").unwrap()],
        loopback(),
    );
    TestServer::builder()
        .authorizer(rules)
        .config(|c| {
            c.cors = comet_server::CorsPolicy::Origins(vec!["https://app.example".into()]);
            change(c);
        })
        .start()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A valid token granting these patterns, for `ttl` seconds.
fn token(publish: &[&str], subscribe: &[&str], ttl: u64) -> String {
    sign(
        json!({"exp": now() + ttl, "comet": {"publish": publish, "subscribe": subscribe}}),
        SECRET,
    )
}

/// Sends `request` raw, with `headers` added to its head.
async fn send(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> raw::RawResponse {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: comet\r\nconnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    raw::exchange(server.address(), head.as_bytes()).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Publishes must be authorized on the direct path and through the router
/// (the percent-encoded path) alike.
const PUBLISH_PATHS: [&str; 2] = ["/pub/news", "/pub/%6Eews"];

#[tokio::test]
async fn publishing_needs_a_token_that_grants_the_channel() {
    let server = server(None, None);
    for path in PUBLISH_PATHS {
        let none = send(&server, "POST", path, &[], "x").await;
        assert_eq!(
            (none.status, none.error_code().as_str()),
            (401, "unauthorized"),
            "{path}"
        );
        assert_eq!(none.header("www-authenticate").as_deref(), Some("Bearer"));

        let forged = sign(
            json!({"exp": now() + 60, "comet": {"publish": ["*"]}}),
            "another-secret-of-at-least-32-bytes!",
        );
        let bad = send(
            &server,
            "POST",
            path,
            &[("authorization", &bearer(&forged))],
            "x",
        )
        .await;
        assert_eq!(bad.status, 401, "{path}");
        assert_eq!(
            bad.header("www-authenticate").as_deref(),
            Some("Bearer error=\"invalid_token\"")
        );

        let elsewhere = token(&["sport"], &[], 60);
        let forbidden = send(
            &server,
            "POST",
            path,
            &[("authorization", &bearer(&elsewhere))],
            "x",
        )
        .await;
        assert_eq!(
            (forbidden.status, forbidden.error_code().as_str()),
            (403, "forbidden"),
            "{path}"
        );

        let good = token(&["news"], &[], 60);
        let published = send(
            &server,
            "POST",
            path,
            &[("authorization", &bearer(&good))],
            "x",
        )
        .await;
        assert_eq!(published.status, 201, "{path}: {:?}", published.body);

        // API keys: limited to their patterns, or all.
        let key = send(
            &server,
            "POST",
            path,
            &[("authorization", &bearer(KEY_NEWS))],
            "x",
        )
        .await;
        assert_eq!(key.status, 201, "{path}");
    }
    let limited = send(
        &server,
        "POST",
        "/pub/sport",
        &[("authorization", &bearer(KEY_NEWS))],
        "x",
    )
    .await;
    assert_eq!(limited.status, 403);
    let all = send(
        &server,
        "POST",
        "/pub/sport",
        &[("authorization", &bearer(KEY_ALL))],
        "x",
    )
    .await;
    assert_eq!(all.status, 201);
}

#[tokio::test]
async fn a_token_is_found_in_the_header_the_cookie_or_the_query() {
    let server = server(None, None);
    let good = token(&["news"], &["news"], 60);
    let cookie = format!("theme=dark; comet_token={good}");
    for (path, headers) in [
        (
            "/pub/news".to_string(),
            vec![("authorization", bearer(&good))],
        ),
        ("/pub/news".to_string(), vec![("cookie", cookie.clone())]),
        (format!("/pub/news?token={good}"), vec![]),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let answer = send(&server, "POST", &path, &headers, "x").await;
        assert_eq!(answer.status, 201, "{path} {headers:?}");
    }
    // First found wins: a bad header is not rescued by a good query token.
    let answer = send(
        &server,
        "POST",
        &format!("/pub/news?token={good}"),
        &[("authorization", "Bearer not-a-token")],
        "x",
    )
    .await;
    assert_eq!(answer.status, 401);
}

#[tokio::test]
async fn expired_early_and_foreign_tokens_are_refused() {
    let server = server(Some("https://auth.example"), Some("comet"));
    let claims = |extra: Value| {
        let mut claims = json!({"exp": now() + 60, "iss": "https://auth.example", "aud": "comet",
                                "comet": {"subscribe": ["news"]}});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        sign(claims, SECRET)
    };
    let cases = [
        ("good", claims(json!({})), 200),
        ("expired", claims(json!({"exp": now() - 5})), 401),
        ("not yet valid", claims(json!({"nbf": now() + 60})), 401),
        ("wrong issuer", claims(json!({"iss": "https://else"})), 401),
        ("wrong audience", claims(json!({"aud": "else"})), 401),
    ];
    for (what, token, status) in cases {
        let answer = send(
            &server,
            "GET",
            &format!("/poll/news?token={token}"),
            &[],
            "",
        )
        .await;
        assert_eq!(
            answer.status,
            status,
            "{what}: {:?}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    let text = metrics(&server).await;
    for reason in ["expired", "not_yet_valid", "wrong_issuer", "wrong_audience"] {
        assert!(
            text.contains(&format!(
                "comet_auth_refused_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason} in\n{text}"
        );
    }
}

#[tokio::test]
async fn every_transport_needs_a_grant_for_every_channel_but_public_ones() {
    let server = server(None, None);
    let news = token(&[], &["news"], 60);
    for kind in ["poll", "sse", "stream"] {
        let path = |channels: &str, token: Option<&str>| match token {
            Some(token) => format!("/{kind}/{channels}?token={token}"),
            None => format!("/{kind}/{channels}"),
        };
        let none = send(&server, "GET", &path("news", None), &[], "").await;
        assert_eq!(none.status, 401, "{kind}");
        let public = raw_status(&server, &path("lobby", None)).await;
        assert_eq!(public, 200, "{kind}: a public channel needs no token");
        let granted = raw_status(&server, &path("lobby,news", Some(&news))).await;
        assert_eq!(granted, 200, "{kind}");
        let half = send(&server, "GET", &path("news,sport", Some(&news)), &[], "").await;
        assert_eq!(
            (half.status, half.error_code().as_str()),
            (403, "forbidden"),
            "{kind}"
        );
        // Through the router (percent-encoded), the same.
        let routed = send(&server, "GET", &format!("/{kind}/%6Eews"), &[], "").await;
        assert_eq!(routed.status, 401, "{kind} through the router");
    }
}

/// The status of a GET whose answer may be a never-ending stream.
async fn raw_status(server: &TestServer, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = raw::connect(server.address()).await;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: comet\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    within("a status line", stream.read_exact(&mut head))
        .await
        .unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

#[tokio::test]
async fn inspection_shows_only_what_the_token_may_read() {
    let server = server(None, None);
    for channel in ["lobby", "news", "sport"] {
        let answer = send(
            &server,
            "POST",
            &format!("/pub/{channel}"),
            &[("authorization", &bearer(KEY_ALL))],
            "x",
        )
        .await;
        assert_eq!(answer.status, 201);
    }
    let listed = |token: Option<String>| {
        let server = &server;
        async move {
            let path = match token {
                Some(token) => format!("/channels?token={token}"),
                None => "/channels".to_string(),
            };
            let answer = send(server, "GET", &path, &[], "").await;
            assert_eq!(answer.status, 200);
            answer.json()["channels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["channel"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(None).await, ["lobby"]);
    assert_eq!(
        listed(Some(token(&[], &["news"], 60))).await,
        ["lobby", "news"]
    );
    assert_eq!(
        listed(Some(KEY_ALL.to_string())).await,
        ["lobby", "news", "sport"]
    );
    assert_eq!(
        send(&server, "GET", "/channels/news", &[], "").await.status,
        401
    );
    assert_eq!(
        send(&server, "GET", "/channels/lobby", &[], "")
            .await
            .status,
        200
    );
    let sport = token(&[], &["news"], 60);
    assert_eq!(
        send(
            &server,
            "GET",
            &format!("/channels/sport?token={sport}"),
            &[],
            ""
        )
        .await
        .status,
        403
    );
    assert_eq!(send(&server, "GET", "/metrics", &[], "").await.status, 401);
    assert_eq!(
        send(
            &server,
            "GET",
            &format!("/metrics?token={KEY_NEWS}"),
            &[],
            ""
        )
        .await
        .status,
        403
    );
    assert_eq!(
        send(
            &server,
            "GET",
            &format!("/metrics?token={KEY_ALL}"),
            &[],
            ""
        )
        .await
        .status,
        200
    );
    assert_eq!(send(&server, "GET", "/healthz", &[], "").await.status, 200);
}

#[tokio::test]
async fn open_streams_end_when_their_token_expires_and_long_polls_never_wait_past_it() {
    let server = server(None, None);
    let short = token(&[], &["news"], 2);
    let http = client();
    let mut sse = SseStream::new(
        http.get(server.url(&format!("/sse/news?token={short}")))
            .send()
            .await
            .unwrap(),
    );
    let mut ndjson = NdjsonStream::new(
        http.get(server.url("/stream/news"))
            .bearer_auth(&short)
            .send()
            .await
            .unwrap(),
    );
    let event = within("the expiry event", sse.next_event()).await.unwrap();
    assert_eq!(
        (event.event.as_str(), event.data.as_str()),
        ("comet-expired", "{\"expired\":true}")
    );
    assert!(
        within("the end of the stream", sse.next_event())
            .await
            .is_none()
    );
    loop {
        let item = within("the expiry line", ndjson.next_item())
            .await
            .expect("a line");
        if item.get("heartbeat").is_some() {
            continue;
        }
        assert_eq!(item, json!({"expired": true}));
        break;
    }
    assert!(
        within("the end of the stream", ndjson.next_item())
            .await
            .is_none()
    );

    // A long poll asking for 30 s is answered when its token runs out.
    let short = token(&[], &["news"], 1);
    let started = std::time::Instant::now();
    let answer = send(
        &server,
        "GET",
        &format!("/poll/news?wait=30&token={short}"),
        &[],
        "",
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // And once expired, the same token is refused.
    within(
        "the token to expire",
        tokio::time::sleep(Duration::from_millis(1100)),
    )
    .await;
    let after = send(
        &server,
        "GET",
        &format!("/poll/news?token={short}"),
        &[],
        "",
    )
    .await;
    assert_eq!(after.status, 401);
    let _ = encode("");
}

#[tokio::test]
async fn without_credentials_only_allowed_peers_publish() {
    let only_one: IpNet = "127.0.0.1/32".parse().unwrap();
    let server = TestServer::builder()
        .authorizer(Authorizer::new(
            ApiKeys::default(),
            None,
            vec![],
            vec![only_one],
        ))
        .start();
    let from = |address: [u8; 4]| {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(std::net::IpAddr::from(address))
            .build()
            .unwrap()
    };
    let allowed = from([127, 0, 0, 1])
        .post(server.url("/pub/news"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 201);
    let other = from([127, 0, 0, 2])
        .post(server.url("/pub/news"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);
    let body: Value = other.json().await.unwrap();
    assert_eq!(body["error"], "publish_forbidden");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--api-keys-file"),
        "{body}"
    );
    // Subscribing stays open to everyone.
    let poll = from([127, 0, 0, 2])
        .get(server.url("/poll/news"))
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), 200);
}

#[tokio::test]
async fn preflights_allow_the_authorization_header_and_credentials_for_named_origins() {
    let server = server(None, None);
    let preflight = send(
        &server,
        "OPTIONS",
        "/pub/news",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "authorization"),
        ],
        "",
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert!(
        preflight
            .header("access-control-allow-headers")
            .unwrap()
            .contains("authorization")
    );
    assert_eq!(
        preflight
            .header("access-control-allow-credentials")
            .as_deref(),
        Some("true")
    );
    // A stream's answer to that origin says credentials are allowed too.
    let news = token(&[], &["news"], 60);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = raw::connect(server.address()).await;
    stream
        .write_all(
            format!("GET /sse/news HTTP/1.1\r\nhost: comet\r\norigin: https://app.example\r\ncookie: comet_token={news}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = vec![0u8; 400];
    let read = within("the stream's head", stream.read(&mut head))
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&head[..read]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("access-control-allow-credentials: true"),
        "{head}"
    );
}

/// A batch needs a grant for the channel of every message: 401 without a
/// token (before the body is read), 403 naming the first message of a
/// channel not granted, and nothing of the batch stored.
#[tokio::test]
async fn a_batch_needs_a_grant_for_every_message() {
    let server = server(None, None);
    let batch = r#"{"messages":[{"channel":"news","data":"1"},{"channel":"sport","data":"2"},{"channel":"news","data":"3"}]}"#;
    let json = ("content-type", "application/json");
    let none = send(&server, "POST", "/pub", &[json], batch).await;
    assert_eq!(
        (none.status, none.error_code().as_str()),
        (401, "unauthorized")
    );
    for credential in [token(&["news"], &[], 60), KEY_NEWS.to_string()] {
        let partial = send(
            &server,
            "POST",
            "/pub",
            &[json, ("authorization", &bearer(&credential))],
            batch,
        )
        .await;
        assert_eq!(partial.status, 403);
        assert_eq!(partial.json()["index"], 1, "the first message of sport");
    }
    let reader = token(&[], &["news"], 60);
    let poll = send(
        &server,
        "GET",
        "/poll/news?since=",
        &[("authorization", &bearer(&reader))],
        "",
    )
    .await;
    assert_eq!(
        poll.json()["messages"],
        json!([]),
        "nothing of a refused batch was stored"
    );
    for credential in [token(&["news", "sport"], &[], 60), KEY_ALL.to_string()] {
        let granted = send(
            &server,
            "POST",
            "/pub",
            &[json, ("authorization", &bearer(&credential))],
            batch,
        )
        .await;
        assert_eq!(
            granted.status,
            201,
            "{}",
            String::from_utf8_lossy(&granted.body)
        );
    }
}

/// The server's metrics, read with the key granting everything.
async fn metrics(server: &TestServer) -> String {
    let path = format!("/metrics?token={KEY_ALL}");
    let answer = send(server, "GET", &path, &[], "").await;
    assert_eq!(answer.status, 200);
    String::from_utf8_lossy(&answer.body).into_owned()
}

/// Publishes `data` to `channel` with the key granting everything: the
/// status.
async fn publish(server: &TestServer, channel: &str, data: &str) -> u16 {
    let path = format!("/pub/{channel}?token={KEY_ALL}");
    send(server, "POST", &path, &[], data).await.status
}

/// When the rules change (a configuration reload), every open stream is
/// judged again with its token: those the new rules refuse end (a
/// WebSocket with 4403, SSE and NDJSON streams by ending their responses;
/// at once on the direct path, where they wait in their channel's group,
/// and at the next message, unsent, through the router) and are counted;
/// a waiting long poll answers the new rules' refusal instead of the next
/// message; the others go on.
#[tokio::test]
async fn a_change_of_the_rules_ends_the_open_streams_it_no_longer_allows() {
    use comet_testkit::ws::{Frame, RawWebSocket};
    // No heartbeat within the test's waits: a stream must end when the
    // rules change, not when it next has something to send.
    let server = server_with(None, None, |c| c.heartbeat = Duration::from_secs(600));
    let jwt = token(&[], &["news"], 600);
    let http = client();
    let sse = |path: String| {
        let request = http.get(server.url(&path));
        async move { SseStream::new(request.send().await.unwrap()) }
    };
    let mut revoked_sse = sse(format!("/sse/news?token={jwt}")).await;
    // A percent-encoded name: the router serves it, not the direct path.
    let mut revoked_routed_sse = sse(format!("/sse/n%65ws?token={jwt}")).await;
    let mut revoked_ndjson = NdjsonStream::new(
        http.get(server.url("/stream/news"))
            .bearer_auth(KEY_NEWS)
            .send()
            .await
            .unwrap(),
    );
    let mut revoked_ws =
        RawWebSocket::connect(server.address(), &format!("/ws/news?token={jwt}")).await;
    let mut kept_sse = sse(format!("/sse/news?token={KEY_ALL}")).await;
    let mut public_sse = sse("/sse/lobby".to_string()).await;

    assert_eq!(publish(&server, "news", "before").await, 201);
    for stream in [&mut revoked_sse, &mut revoked_routed_sse, &mut kept_sse] {
        assert_eq!(stream.next_event().await.unwrap().data, "before");
    }
    assert_eq!(revoked_ndjson.next_item().await.unwrap()["data"], "before");
    loop {
        let item = within("the first message", revoked_ws.next_item()).await;
        if item.get("heartbeat").is_none() {
            assert_eq!(item["data"], "before");
            break;
        }
    }

    // Two long polls waiting: one parked on the direct path, one through
    // the router.
    let long_poll = |path: String| {
        let address = server.address();
        tokio::spawn(async move {
            let request =
                format!("GET {path} HTTP/1.1\r\nhost: comet\r\nconnection: close\r\n\r\n");
            raw::exchange(address, request.as_bytes()).await
        })
    };
    let parked_poll = long_poll(format!("/poll/news?wait=30&token={jwt}"));
    let routed_poll = long_poll(format!("/poll/n%65ws?wait=30&token={jwt}"));
    within("both polls to wait", async {
        loop {
            if metrics(&server)
                .await
                .contains("comet_subscribers{transport=\"longpoll\"} 2")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // The new rules: KEY_NEWS gone, JWTs signed with another secret.
    let (secret, keys) = files();
    std::fs::write(&secret, "another-secret-of-at-least-32-bytes\n").unwrap();
    std::fs::write(&keys, format!("{KEY_ALL}\n")).unwrap();
    server.rules().replace(Authorizer::new(
        ApiKeys::read(&keys).unwrap(),
        Some(JwtVerifier::new(
            vec![read_secret(&secret).unwrap()],
            None,
            None,
        )),
        vec![ChannelPattern::parse("lobby").unwrap()],
        loopback(),
    ));

    let frames = within("the WebSocket's close", revoked_ws.rest()).await;
    assert_eq!(frames.last(), Some(&Frame::Close(Some(4403))), "{frames:?}");
    assert!(
        revoked_sse.next_event().await.is_none(),
        "the SSE stream goes on"
    );
    assert!(
        within("the end of the NDJSON stream", async {
            loop {
                match revoked_ndjson.next_item().await {
                    Some(item) if item.get("heartbeat").is_some() => continue,
                    other => break other,
                }
            }
        })
        .await
        .is_none()
    );
    assert_eq!(publish(&server, "news", "after").await, 201);
    assert_eq!(kept_sse.next_event().await.unwrap().data, "after");
    // The polls are answered with the new rules' refusal, not the message.
    for (name, poll) in [("parked", parked_poll), ("routed", routed_poll)] {
        let answer = within("a poll's answer", poll).await.unwrap();
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (401, "unauthorized"),
            "the {name} poll: {}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    // A stream through the router waits on its own: it ends at its next
    // message, without sending it.
    assert!(
        revoked_routed_sse.next_event().await.is_none(),
        "the SSE stream through the router goes on"
    );
    assert_eq!(publish(&server, "lobby", "still").await, 201);
    assert_eq!(public_sse.next_event().await.unwrap().data, "still");

    let text = metrics(&server).await;
    assert!(
        text.contains("comet_auth_refused_total{reason=\"revoked\"} 4"),
        "{text}"
    );
}

/// A WebSocket handshake is authorized as every other subscription (the
/// usual 401 and 403 instead of a `101`), and an open WebSocket closes with
/// 4401 when its token expires.
#[tokio::test]
async fn websockets_are_authorized_like_every_transport_and_close_with_4401_at_expiry() {
    use comet_testkit::ws::{Frame, RawWebSocket};
    let server = server(None, None);
    let news = token(&[], &["news"], 60);
    let handshake = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nhost: comet\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    let none = raw::exchange(server.address(), handshake("/ws/news").as_bytes()).await;
    assert_eq!(
        (none.status, none.error_code().as_str()),
        (401, "unauthorized")
    );
    assert!(none.header("www-authenticate").is_some(), "{}", none.head);
    let half = raw::exchange(
        server.address(),
        handshake(&format!("/ws/news,sport?token={news}")).as_bytes(),
    )
    .await;
    assert_eq!(
        (half.status, half.error_code().as_str()),
        (403, "forbidden")
    );
    RawWebSocket::connect(server.address(), "/ws/lobby").await;
    RawWebSocket::connect(server.address(), &format!("/ws/lobby,news?token={news}")).await;

    let short = token(&[], &["news"], 2);
    let mut socket =
        RawWebSocket::connect(server.address(), &format!("/ws/news?token={short}")).await;
    let frames = within("the expiry", socket.rest()).await;
    assert_eq!(frames.last(), Some(&Frame::Close(Some(4401))), "{frames:?}");
}
