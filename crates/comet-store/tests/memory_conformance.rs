//! The in-memory store against the shared conformance suite.

use std::sync::Arc;

use comet_store::{MemoryStore, Store, StoreOptions};

async fn memory_store(options: StoreOptions) -> Arc<dyn Store> {
    Arc::new(MemoryStore::new(options))
}

comet_store::store_conformance!(memory_store);
