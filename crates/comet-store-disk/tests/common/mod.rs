//! What the durable store's test files share.

// Each test file uses some of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A data directory path no other test uses (not created), under the
/// build's scratch space.
pub fn fresh_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Settings under which SQLite commits only when a sweep or the close asks
/// (or the journal fills): what the store holds is read from the writer's
/// tail.
pub fn committing_rarely() -> comet_store_disk::DiskOptions {
    comet_store_disk::DiskOptions {
        commit_every: Duration::from_secs(3600),
        commit_when_idle: Duration::from_secs(3600),
    }
}
