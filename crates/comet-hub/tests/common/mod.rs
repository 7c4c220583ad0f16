//! A store for the hub's tests: the memory store, seen through a wrapper
//! that can do what a shared backend fed by other nodes does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use comet_protocol::{ChannelName, Epoch, Message, Seq};
use comet_store::{
    AppendError, Appended, ChannelSummary, CommitListener, Draft, Footprint, History, MemoryStore,
    ReadLimit, Store, StoreError, StoreOptions,
};

/// The memory store, with a cluster's behaviours on demand: a head beyond
/// what this hub was told of (messages stored by other nodes, not yet
/// announced here); the listener at hand, so a test can announce a message
/// again (a feed replayed after a reconnection); announcements muted (a
/// node whose feed fell behind); and the history replaced by a new one (a
/// shared store that lost its data).
pub struct WrappedStore {
    inner: RwLock<Arc<MemoryStore>>,
    listener: Mutex<Option<Arc<dyn CommitListener>>>,
    muted: Arc<AtomicBool>,
    head_ahead_by: AtomicU64,
    confirmed_ahead_by: AtomicU64,
}

/// Passes announcements on unless muted.
struct Muting {
    to: Arc<dyn CommitListener>,
    muted: Arc<AtomicBool>,
}

impl CommitListener for Muting {
    fn committed(&self, message: &Arc<Message>) {
        if !self.muted.load(Ordering::SeqCst) {
            self.to.committed(message);
        }
    }
}

impl WrappedStore {
    pub fn new() -> Self {
        Self {
            inner: RwLock::new(Arc::new(MemoryStore::new(StoreOptions::default()))),
            listener: Mutex::new(None),
            muted: Arc::new(AtomicBool::new(false)),
            head_ahead_by: AtomicU64::new(0),
            confirmed_ahead_by: AtomicU64::new(0),
        }
    }

    fn inner(&self) -> Arc<MemoryStore> {
        self.inner.read().unwrap().clone()
    }

    /// Stops (or starts again) announcing what is stored: messages are
    /// stored and readable, and the hub is not told.
    #[allow(dead_code)]
    pub fn mute(&self, muted: bool) {
        self.muted.store(muted, Ordering::SeqCst);
    }

    /// Replaces the history with a new, empty one (a new epoch), and tells
    /// the hub, as a shared store's feed does when it finds its data lost.
    #[allow(dead_code)]
    pub fn replace_history(&self) -> Epoch {
        let fresh = Arc::new(MemoryStore::new(StoreOptions::default()));
        let listener = self.listener();
        fresh.set_commit_listener(Arc::new(Muting {
            to: listener.clone(),
            muted: self.muted.clone(),
        }));
        let epoch = fresh.epoch();
        *self.inner.write().unwrap() = fresh;
        listener.epoch_changed(epoch.clone());
        epoch
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
        self.inner().epoch()
    }
    fn head(&self) -> Seq {
        Seq(self.inner().head().0 + self.head_ahead_by.load(Ordering::SeqCst))
    }
    async fn confirmed_head(&self) -> Result<Seq, StoreError> {
        Ok(Seq(
            self.head().0 + self.confirmed_ahead_by.load(Ordering::SeqCst)
        ))
    }
    fn set_commit_listener(&self, listener: Arc<dyn CommitListener>) {
        *self.listener.lock().unwrap() = Some(listener.clone());
        self.inner().set_commit_listener(Arc::new(Muting {
            to: listener,
            muted: self.muted.clone(),
        }));
    }
    async fn append_batch(&self, drafts: Vec<Draft>) -> Result<Vec<Appended>, AppendError> {
        self.inner().append_batch(drafts).await
    }
    async fn read(
        &self,
        channel: &ChannelName,
        after: Seq,
        upto: Seq,
        limit: ReadLimit,
    ) -> Result<History, StoreError> {
        self.inner().read(channel, after, upto, limit).await
    }
    async fn backlog_start(
        &self,
        channel: &ChannelName,
        count: usize,
        upto: Seq,
    ) -> Result<Seq, StoreError> {
        self.inner().backlog_start(channel, count, upto).await
    }
    fn footprint(&self) -> Footprint {
        self.inner().footprint()
    }
    async fn summary(&self, channel: &ChannelName) -> Result<Option<ChannelSummary>, StoreError> {
        self.inner().summary(channel).await
    }
    async fn channels(
        &self,
        after: Option<&ChannelName>,
        limit: usize,
    ) -> Result<Vec<(ChannelName, ChannelSummary)>, StoreError> {
        self.inner().channels(after, limit).await
    }
    async fn enforce_retention(&self) -> Result<(), StoreError> {
        self.inner().enforce_retention().await
    }
    async fn check_health(&self) -> Result<(), StoreError> {
        self.inner().check_health().await
    }
}
