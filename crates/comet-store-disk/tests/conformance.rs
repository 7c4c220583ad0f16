//! The durable store against the shared conformance suite.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use comet_store::{Store, StoreOptions};
use comet_store_disk::DiskStore;

async fn disk_store(options: StoreOptions) -> Arc<dyn Store> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "conformance-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Arc::new(DiskStore::open(&dir, options).expect("open a fresh store"))
}

comet_store::store_conformance!(disk_store);
