//! The channel list, the built-in files, and their errors.

use comet_testkit::{TestServer, client, get_json, publish};

#[tokio::test]
async fn channels_are_listed_in_pages() {
    let server = TestServer::start();
    let http = client();
    for channel in ["c", "a", "b", "a"] {
        publish(&http, &server.base(), channel, "x").await;
    }
    let _listener = http.get(server.url("/sse/b")).send().await.unwrap();
    let first = get_json(&http, &server.url("/channels?limit=2")).await;
    let names: Vec<&str> = first["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(first["channels"][0]["messages"], 2);
    assert_eq!(first["channels"][1]["subscribers"], 1);
    assert!(
        first["channels"][0]["last_id"]
            .as_str()
            .unwrap()
            .ends_with("/a")
    );
    assert_eq!(first["next"], "b");
    let rest = get_json(&http, &server.url("/channels?limit=2&after=b")).await;
    assert_eq!(rest["channels"][0]["channel"], "c");
    assert_eq!(rest["next"], serde_json::Value::Null);
    for bad in [
        "/channels?limit=0",
        "/channels?limit=x",
        "/channels?after=a%20b",
    ] {
        let response = http.get(server.url(bad)).send().await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn the_page_and_the_client_are_served() {
    let server = TestServer::start();
    let http = client();
    for (path, content_type, needle) in [
        ("/", "text/html; charset=utf-8", "<script type=\"module\""),
        (
            "/comet.js",
            "text/javascript; charset=utf-8",
            "export function subscribe",
        ),
        (
            "/comet.d.ts",
            "application/typescript; charset=utf-8",
            "export declare function subscribe",
        ),
        ("/app.js", "text/javascript; charset=utf-8", "import"),
        ("/style.css", "text/css; charset=utf-8", "{"),
    ] {
        let response = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains(needle), "{path} contains {needle:?}");
    }
    let missing = http.get(server.url("/nothing.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}
