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
