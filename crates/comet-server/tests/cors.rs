//! Which web pages may use the server: same origin always, other origins
//! only when allowed; everything else is refused with 403.

use comet_server::CorsPolicy;
use comet_testkit::{TestServer, client};

async fn request(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    origin: Option<&str>,
) -> reqwest::Response {
    let mut request = client().request(method, server.url(path));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    if path.starts_with("/pub/") {
        request = request.body("x");
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn clients_without_an_origin_and_the_same_origin_are_served() {
    let server = TestServer::start();
    let same = server.base();
    for origin in [None, Some(same.as_str())] {
        let response = request(&server, reqwest::Method::POST, "/pub/news", origin).await;
        assert_eq!(response.status(), 201, "{origin:?}");
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none()
        );
    }
}

#[tokio::test]
async fn other_origins_are_refused_by_default() {
    let server = TestServer::start();
    for (method, path) in [
        (reqwest::Method::POST, "/pub/news"),
        (reqwest::Method::GET, "/sse/news"),
        (reqwest::Method::GET, "/poll/news"),
        (reqwest::Method::GET, "/comet.js"),
        (reqwest::Method::OPTIONS, "/sse/news"),
    ] {
        let response = request(&server, method.clone(), path, Some("https://evil.example")).await;
        assert_eq!(response.status(), 403, "{method} {path}");
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none()
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "origin_not_allowed");
    }
}

#[tokio::test]
async fn allowed_origins_get_cors_answers_and_preflights() {
    let server = TestServer::builder()
        .config(|c| c.cors = CorsPolicy::Origins(vec!["https://app.example".into()]))
        .start();
    let response = request(
        &server,
        reqwest::Method::GET,
        "/poll/news",
        Some("https://app.example"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(response.headers()["vary"], "origin");

    let preflight = client()
        .request(reqwest::Method::OPTIONS, server.url("/pub/news"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let headers = preflight.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("last-event-id")
    );

    let other = request(
        &server,
        reqwest::Method::GET,
        "/poll/news",
        Some("https://other.example"),
    )
    .await;
    assert_eq!(other.status(), 403);
}

#[tokio::test]
async fn any_origin_when_asked() {
    let server = TestServer::builder()
        .config(|c| c.cors = CorsPolicy::Any)
        .start();
    let response = request(
        &server,
        reqwest::Method::POST,
        "/pub/news",
        Some("http://anything.test:81"),
    )
    .await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://anything.test:81"
    );
}
