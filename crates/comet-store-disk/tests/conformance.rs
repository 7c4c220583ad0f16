//! The durable store against the shared conformance suite.

mod common;

use std::sync::Arc;

use comet_store::{Store, StoreOptions};
use comet_store_disk::DiskStore;

async fn disk_store(options: StoreOptions) -> Arc<dyn Store> {
    let dir = common::fresh_dir("conformance");
    Arc::new(DiskStore::open(&dir, options).expect("open a fresh store"))
}

comet_store::store_conformance!(disk_store);

/// The suite again, with SQLite committing only when a sweep or the close
/// asks (or the journal fills): reads go through the writer's tail.
mod committing_rarely {
    use super::*;

    async fn disk_store(options: StoreOptions) -> Arc<dyn Store> {
        let dir = common::fresh_dir("conformance-rarely");
        let disk = common::committing_rarely();
        Arc::new(DiskStore::open_with(&dir, options, disk).expect("open a fresh store"))
    }

    comet_store::store_conformance!(disk_store);
}
