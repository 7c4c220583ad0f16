//! The store conformance suite against a real `redis-server`, one per test.

use std::sync::Arc;

use async_trait::async_trait;
use comet_protocol::{ChannelName, Epoch, Seq};
use comet_store::{
    AppendError, Appended, ChannelSummary, CommitListener, Draft, Footprint, History, ReadLimit,
    Store, StoreError, StoreOptions,
};
use comet_store_redis::{RedisOptions, RedisStore};
use comet_testkit::RedisServer;

/// The store with the Redis behind it, stopped after the store.
struct WithServer {
    store: RedisStore,
    _server: RedisServer,
}

#[async_trait]
impl Store for WithServer {
    fn epoch(&self) -> Epoch {
        self.store.epoch()
    }
    fn head(&self) -> Seq {
        self.store.head()
    }
    async fn confirmed_head(&self) -> Result<Seq, StoreError> {
        self.store.confirmed_head().await
    }
    fn set_commit_listener(&self, listener: Arc<dyn CommitListener>) {
        self.store.set_commit_listener(listener);
    }
    async fn append_batch(&self, drafts: Vec<Draft>) -> Result<Vec<Appended>, AppendError> {
        self.store.append_batch(drafts).await
    }
    async fn read(
        &self,
        channel: &ChannelName,
        after: Seq,
        upto: Seq,
        limit: ReadLimit,
    ) -> Result<History, StoreError> {
        self.store.read(channel, after, upto, limit).await
    }
    async fn backlog_start(
        &self,
        channel: &ChannelName,
        count: usize,
        upto: Seq,
    ) -> Result<Seq, StoreError> {
        self.store.backlog_start(channel, count, upto).await
    }
    async fn summary(&self, channel: &ChannelName) -> Result<Option<ChannelSummary>, StoreError> {
        self.store.summary(channel).await
    }
    async fn channels(
        &self,
        after: Option<&ChannelName>,
        limit: usize,
    ) -> Result<Vec<(ChannelName, ChannelSummary)>, StoreError> {
        self.store.channels(after, limit).await
    }
    async fn enforce_retention(&self) -> Result<(), StoreError> {
        self.store.enforce_retention().await
    }
    fn footprint(&self) -> Footprint {
        self.store.footprint()
    }
    async fn check_health(&self) -> Result<(), StoreError> {
        self.store.check_health().await
    }
}

async fn redis_store(options: StoreOptions) -> Arc<dyn Store> {
    let server = RedisServer::start();
    let store = RedisStore::open(RedisOptions::new(server.url()), options)
        .await
        .expect("open the store");
    Arc::new(WithServer {
        store,
        _server: server,
    })
}

comet_store::store_conformance!(redis_store);
