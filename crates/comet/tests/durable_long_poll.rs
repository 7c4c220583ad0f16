//! Long polls over the durable store, through the real binary. There the
//! commit happens on the store's writer thread, not in the publisher's
//! task: parked polls must still be answered, each with every message
//! exactly once and in order, while a publisher races their re-polls.

use std::path::Path;

use comet_testkit::{
    ServerProcess, client, get_json, long_poll_until, publish, wait_for_metric, within,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_long_polls_over_the_durable_store_receive_everything_in_order() {
    const CLIENTS: usize = 30;
    const MESSAGES: usize = 20;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("durable-long-poll-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = ServerProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_comet")),
        &["--data-dir", dir.to_str().unwrap()],
    );
    let http = client();
    let base = server.base().to_string();
    let start = get_json(&http, &format!("{base}/poll/durable")).await["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let base = base.clone();
        let start = start.clone();
        clients.push(tokio::spawn(async move {
            long_poll_until(&base, "durable", &start, MESSAGES).await
        }));
    }
    wait_for_metric(
        &http,
        &base,
        &format!("comet_subscribers{{transport=\"longpoll\"}} {CLIENTS}"),
    )
    .await;
    for i in 0..MESSAGES {
        publish(&http, &base, "durable", &i.to_string()).await;
    }
    let expected: Vec<String> = (0..MESSAGES).map(|i| i.to_string()).collect();
    for client in clients {
        let received = within("a client's messages", client).await.unwrap();
        assert_eq!(received, expected);
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
