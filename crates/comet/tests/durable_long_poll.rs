//! Long polls over the durable store, through the real binary. There the
//! commit happens on the store's writer thread, not in the publisher's
//! task: parked polls must still be answered, each with every message
//! exactly once and in order, while a publisher races their re-polls.

use std::path::Path;

use comet_testkit::{ServerProcess, race_long_polls_against_a_publisher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_long_polls_over_the_durable_store_receive_everything_in_order() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("durable-long-poll-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = ServerProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_comet")),
        &["--data-dir", dir.to_str().unwrap()],
    );
    race_long_polls_against_a_publisher(server.base(), "durable", 30, 20).await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
