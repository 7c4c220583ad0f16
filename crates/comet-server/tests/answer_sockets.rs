//! On the durable store the writer answers publishes through a duplicate
//! of each publishing connection's socket, and the number of duplicates is
//! bounded (the connection caps set their files aside): connections beyond
//! the bound are answered by their own tasks, alike. This file is a test
//! binary of its own, so that no other test opens sockets in the process
//! while it counts them.

use comet_testkit::raw::{connect, read_response};
use comet_testkit::{TestServer, TestStore};
use tokio::io::AsyncWriteExt;

/// The sockets this process holds open.
fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: comet\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn publishing_connections_beyond_the_budget_of_duplicates_are_answered_as_usual() {
    // With 100 connections at most, 16 publishing connections may hold a
    // second descriptor for answers written at the commit; the 4 beyond
    // them are answered by their own tasks, every one alike.
    let server = TestServer::builder().connections(100).start();
    let before = open_sockets();
    let mut connections = Vec::new();
    for round in 0..2 {
        for i in 0..20 {
            if round == 0 {
                connections.push(connect(server.address()).await);
            }
            let stream = &mut connections[i];
            let request = post("/pub/budget", &format!("{round}:{i}"));
            stream.write_all(request.as_bytes()).await.unwrap();
            let answer = read_response(stream).await;
            assert_eq!(answer.status, 201, "{answer:?}");
            assert_eq!(answer.json()["channel"], "budget");
        }
    }
    let duplicates = match server.store() {
        TestStore::Durable => 16,
        TestStore::Memory => 0,
    };
    // Ours and the server's end of each connection, and the duplicates
    // (with room for a socket or two the runtime may open meanwhile: the
    // test needs only to tell 16 duplicates from 20).
    let opened = open_sockets() - before;
    let expected = 2 * 20 + duplicates;
    assert!(
        (expected..=expected + 2).contains(&opened),
        "{opened} sockets opened, {expected} expected"
    );
}
