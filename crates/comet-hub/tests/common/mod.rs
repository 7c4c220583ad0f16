//! A store for the hub's tests: the memory store, seen through a wrapper
//! that can do what a shared backend fed by other nodes does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use comet_protocol::{ChannelName, Epoch, Seq};
use comet_store::{
    AppendError, Appended, ChannelSummary, CommitListener, Draft, Footprint, History, MemoryStore,
    ReadLimit, Store, StoreError, StoreOptions,
};

/// The memory store, with two of a cluster's behaviours on demand: a
/// head beyond what this hub was told of (messages stored by other nodes,
/// not yet announced here), and the listener at hand, so a test can
/// announce a message again (a feed replayed after a reconnection).
pub struct WrappedStore {
    inner: MemoryStore,
    listener: Mutex<Option<Arc<dyn CommitListener>>>,
    head_ahead_by: AtomicU64,
    confirmed_ahead_by: AtomicU64,
}

impl WrappedStore {
    pub fn new() -> Self {
        Self {
            inner: MemoryStore::new(StoreOptions::default()),
            listener: Mutex::new(None),
            head_ahead_by: AtomicU64::new(0),
            confirmed_ahead_by: AtomicU64::new(0),
        }
    }

    /// From now on, `confirmed_head()` is `by` beyond `head()`: the shared
    /// history is ahead of what this node heard of.
    #[allow(dead_code)]
    pub fn confirmed_ahead_by(&self, by: u64) {
        self.confirmed_ahead_by.store(by, Ordering::SeqCst);
    }

    /// From now on, `head()` is `by` beyond what was stored here.
    #[allow(dead_code)]
    pub fn head_ahead_by(&self, by: u64) {
        self.head_ahead_by.store(by, Ordering::SeqCst);
    }

    /// The listener the hub installed.
    #[allow(dead_code)]
    pub fn listener(&self) -> Arc<dyn CommitListener> {
        self.listener
            .lock()
            .unwrap()
            .clone()
            .expect("the hub installed its listener")
    }
}

#[async_trait]
impl Store for WrappedStore {
    fn epoch(&self) -> Epoch {
        self.inner.epoch()
    }
    fn head(&self) -> Seq {
        Seq(self.inner.head().0 + self.head_ahead_by.load(Ordering::SeqCst))
    }
    async fn confirmed_head(&self) -> Result<Seq, StoreError> {
        Ok(Seq(
            self.head().0 + self.confirmed_ahead_by.load(Ordering::SeqCst)
        ))
    }
    fn set_commit_listener(&self, listener: Arc<dyn CommitListener>) {
        *self.listener.lock().unwrap() = Some(listener.clone());
        self.inner.set_commit_listener(listener);
    }
    async fn append_batch(&self, drafts: Vec<Draft>) -> Result<Vec<Appended>, AppendError> {
        self.inner.append_batch(drafts).await
    }
    async fn read(
        &self,
        channel: &ChannelName,
        after: Seq,
        upto: Seq,
        limit: ReadLimit,
    ) -> Result<History, StoreError> {
        self.inner.read(channel, after, upto, limit).await
    }
    async fn backlog_start(
        &self,
        channel: &ChannelName,
        count: usize,
        upto: Seq,
    ) -> Result<Seq, StoreError> {
        self.inner.backlog_start(channel, count, upto).await
    }
    fn footprint(&self) -> Footprint {
        self.inner.footprint()
    }
    async fn summary(&self, channel: &ChannelName) -> Result<Option<ChannelSummary>, StoreError> {
        self.inner.summary(channel).await
    }
    async fn channels(
        &self,
        after: Option<&ChannelName>,
        limit: usize,
    ) -> Result<Vec<(ChannelName, ChannelSummary)>, StoreError> {
        self.inner.channels(after, limit).await
    }
    async fn enforce_retention(&self) -> Result<(), StoreError> {
        self.inner.enforce_retention().await
    }
    async fn check_health(&self) -> Result<(), StoreError> {
        self.inner.check_health().await
    }
}
