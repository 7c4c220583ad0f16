//! Where channel history lives: the [`Store`] trait and what surrounds it.
//!
//! A store keeps, per channel, an append-only log of [`Message`]s numbered by
//! one store-wide [`Seq`], trims it by [`Retention`], and reads it back by
//! position. Every backend (this crate's [`MemoryStore`], the durable embedded
//! store, Redis) implements the same trait and passes the same
//! `conformance` suite (feature `conformance`), so the hub above never knows which one it runs on.
//!
//! A channel with nothing retained is forgotten: the store keeps only what
//! gap detection needs of it, bounded (see [`forgotten`]), so publishing to
//! ever new channel names (a channel per user) cannot grow memory, disk or
//! start-up time without limit.
//!
//! The store is also where the live feed starts: a store calls its
//! [`CommitListener`] once per stored message, in sequence order, before the
//! append that stored it returns. The hub is that listener. Feeding the hub
//! from the store (rather than from the publisher's request) is what keeps
//! delivery in store order when publishes complete out of order, and lets a
//! shared backend feed messages published on other nodes.

mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod forgotten;
pub mod idempotency;
mod memory;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
pub use clock::{Clock, ManualClock, SystemClock};
use comet_protocol::{ChannelName, Cursor, Data, Epoch, EventType, IdempotencyKey, Message, Seq};
pub use idempotency::{IdempotencyOptions, Original};
pub use memory::MemoryStore;

/// How much history each channel keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// The most messages kept per channel (at least 1).
    pub max_messages: usize,
    /// Messages older than this are removed; `None` keeps them regardless of age.
    pub max_age: Option<Duration>,
    /// The most bytes the whole store keeps (see [`stored_size`]); beyond it
    /// the oldest messages of the store, whatever their channel, are removed.
    /// `None`: no total limit.
    pub max_bytes: Option<u64>,
    /// How many forgotten channels (nothing retained) are remembered exactly
    /// for gap detection; older ones are remembered approximately (see
    /// [`forgotten`]). A store may let them go in batches, keeping up to a
    /// sixteenth more.
    pub forgotten_channels: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_messages: 1000,
            max_age: None,
            max_bytes: None,
            forgotten_channels: 65_536,
        }
    }
}

/// How much one read may return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimit {
    /// Most messages.
    pub messages: usize,
    /// Most bytes, counted by [`stored_size`]; the first message is
    /// returned whatever its size.
    pub bytes: u64,
}

impl ReadLimit {
    /// A limit by message count only.
    pub fn messages(messages: usize) -> Self {
        Self {
            messages,
            bytes: u64::MAX,
        }
    }

    /// Takes as many of `sizes` (in order) as the limit allows: at least
    /// one when there is one.
    pub fn fits(&self, sizes: impl IntoIterator<Item = u64>) -> usize {
        let mut total: u64 = 0;
        let mut count = 0;
        for size in sizes {
            total = total.saturating_add(size);
            if count >= self.messages || (count > 0 && total > self.bytes) {
                break;
            }
            count += 1;
        }
        count
    }
}

/// What a store holds, for metrics and for checking its bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Channels with retained messages.
    pub channels: u64,
    /// Forgotten channels remembered exactly (see [`forgotten`]).
    pub forgotten_channels: u64,
    /// Messages retained.
    pub messages: u64,
    /// Their size, by [`stored_size`].
    pub bytes: u64,
    /// Idempotency keys remembered (see [`idempotency`]).
    pub idempotency_keys: u64,
}

/// A [`Footprint`] that one task keeps up to date and any thread reads
/// without a lock (a store's `footprint`). Each figure is read on its own:
/// a read during an update may mix figures of the two.
#[derive(Debug, Default)]
pub struct SharedFootprint {
    channels: AtomicU64,
    forgotten_channels: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
    idempotency_keys: AtomicU64,
}

impl SharedFootprint {
    /// Makes `footprint` the one read from now on.
    pub fn store(&self, footprint: Footprint) {
        let Footprint {
            channels,
            forgotten_channels,
            messages,
            bytes,
            idempotency_keys,
        } = footprint;
        self.channels.store(channels, Ordering::Relaxed);
        self.forgotten_channels
            .store(forgotten_channels, Ordering::Relaxed);
        self.messages.store(messages, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        self.idempotency_keys
            .store(idempotency_keys, Ordering::Relaxed);
    }

    /// The footprint last stored.
    pub fn load(&self) -> Footprint {
        Footprint {
            channels: self.channels.load(Ordering::Relaxed),
            forgotten_channels: self.forgotten_channels.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            idempotency_keys: self.idempotency_keys.load(Ordering::Relaxed),
        }
    }
}

/// What a message counts for against [`Retention::max_bytes`]: its data,
/// event type and channel name, plus a fixed 64 bytes for the id, time and
/// bookkeeping. The same measure in every backend.
pub fn stored_size(message: &Message) -> u64 {
    stored_size_of(message.channel(), message.event(), message.data().len())
}

/// [`stored_size`] of a message not built yet.
pub fn stored_size_of(channel: &ChannelName, event: &EventType, data_len: usize) -> u64 {
    (data_len + event.as_str().len() + channel.as_str().len()) as u64 + 64
}

/// What every store is built from, whatever the backend.
#[derive(Clone)]
pub struct StoreOptions {
    /// Retention limits.
    pub retention: Retention,
    /// The clock that stamps messages for retention by age.
    pub clock: Arc<dyn Clock>,
    /// How long and how many idempotency keys are remembered.
    pub idempotency: IdempotencyOptions,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            retention: Retention::default(),
            clock: Arc::new(SystemClock),
            idempotency: IdempotencyOptions::default(),
        }
    }
}

/// A message to store.
#[derive(Clone, Debug)]
pub struct Draft {
    /// Its channel.
    pub channel: ChannelName,
    /// Its event type.
    pub event: EventType,
    /// Its data.
    pub data: Data,
    /// Its idempotency key, if the publisher gave one.
    pub idempotency_key: Option<IdempotencyKey>,
    /// The subscriber count its publish reports; kept with the key, to
    /// answer a repeat as the original was answered.
    pub subscribers: u64,
}

impl Draft {
    /// A draft without an idempotency key.
    pub fn new(channel: ChannelName, event: EventType, data: Data) -> Self {
        Self {
            channel,
            event,
            data,
            idempotency_key: None,
            subscribers: 0,
        }
    }
}

/// What became of one draft of an append.
#[derive(Clone, Debug)]
pub enum Appended {
    /// Stored as this message.
    Stored(Arc<Message>),
    /// A repeat of a publish with the same idempotency key and content:
    /// nothing was stored.
    Repeat(Original),
}

/// The message an append of one draft without an idempotency key stored:
/// anything else is the store failing.
fn the_message_stored(
    appended: Result<Vec<Appended>, AppendError>,
) -> Result<Arc<Message>, StoreError> {
    match appended {
        Ok(mut appended) => match (appended.pop(), appended.is_empty()) {
            (Some(Appended::Stored(message)), true) => Ok(message),
            _ => Err(StoreError::Unavailable(
                "the store did not store a message without a key".into(),
            )),
        },
        Err(AppendError::Store(error)) => Err(error),
        Err(AppendError::IdempotencyConflict { .. }) => Err(StoreError::Unavailable(
            "the store found a conflict for a message without a key".into(),
        )),
    }
}

/// Work to do with a stored message as soon as its commit is done (see
/// [`Store::append_batch_then`]), given what became of each draft: it may
/// run on the store's own writer thread, so it must be short and must not
/// block.
pub type AfterCommit = Box<dyn FnOnce(&[Appended]) + Send>;

/// Why an append stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The draft at `index` reuses an idempotency key of its channel for
    /// other content (within the window, or earlier in the same append).
    #[error("draft {index} reuses an idempotency key for other content")]
    IdempotencyConflict {
        /// The position of the draft.
        index: usize,
    },
}

/// A slice of one channel's history.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Messages, oldest first.
    pub messages: Vec<Arc<Message>>,
    /// The highest sequence number of this channel that retention removed (or
    /// that the store can no longer vouch for). A reader that resumes after a
    /// position below this has missed messages: that is a gap.
    pub trimmed_upto: Seq,
    /// The read's limit stopped it: messages up to `upto` may follow the
    /// last one returned.
    pub truncated: bool,
}

/// What a store knows of one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelSummary {
    /// Messages currently retained.
    pub retained: u64,
    /// The id of the newest message ever stored in the channel.
    pub last_id: Cursor,
}

/// A store failure. The hub turns it into a 503 for the request at hand.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot serve now (I/O failure, lost connection, …).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// An I/O error.
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Every sequence number of this history is used: nothing more can be
    /// stored until the history is started anew.
    #[error("the history's sequence numbers are exhausted")]
    SequenceExhausted,
}

/// Receives every stored message, once, in sequence order.
pub trait CommitListener: Send + Sync {
    /// Called once per message, in sequence order, never concurrently with
    /// itself, before the `append` that stored the message returns. It must
    /// be quick and must not call back into the store.
    fn committed(&self, message: &Arc<Message>);

    /// The store moves on to `seq` without announcing the messages up to
    /// it that were not announced yet (a node that fell behind a shared log
    /// by more than its length): they are in the store, readable as any
    /// history. Every message after `seq` is announced as usual. Called in
    /// sequence with [`Self::committed`]. Stores of one node never call it.
    fn skipped_to(&self, seq: Seq) {
        let _ = seq;
    }

    /// The history was replaced by another, `epoch` (a shared store lost its
    /// data): nothing announced so far belongs to it, and its messages are
    /// announced from its start. Called in sequence with
    /// [`Self::committed`]. Stores of one node never call it.
    fn epoch_changed(&self, epoch: Epoch) {
        let _ = epoch;
    }
}

/// A channel history backend.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The tag of the history this store holds.
    fn epoch(&self) -> Epoch;

    /// The sequence number of the newest stored message (`Seq::ZERO` if none).
    fn head(&self) -> Seq;

    /// The newest sequence number the history holds, as the backend says
    /// now: for a store shared by several nodes, it may be ahead of
    /// [`head`](Store::head), which is what this node heard of.
    async fn confirmed_head(&self) -> Result<Seq, StoreError> {
        Ok(self.head())
    }

    /// Installs the listener that is told of every stored message. A store has
    /// one listener; installing another replaces it.
    fn set_commit_listener(&self, listener: Arc<dyn CommitListener>);

    /// Stores `drafts` at the next sequence numbers, in order, all or
    /// nothing, and says what became of each (in the drafts' order). A
    /// draft with an idempotency key its channel already stored with the
    /// same content (within the window, or earlier in these drafts) is not
    /// stored again: it is a [`Appended::Repeat`]; with other content the
    /// whole append fails with [`AppendError::IdempotencyConflict`]. When
    /// it returns, the messages and their keys are stored (durably, for a
    /// durable store, in one commit) and the listener has been told; two
    /// appends racing with the same key store one message.
    async fn append_batch(&self, drafts: Vec<Draft>) -> Result<Vec<Appended>, AppendError>;

    /// Stores one message without an idempotency key and returns it.
    async fn append(
        &self,
        channel: &ChannelName,
        event: EventType,
        data: Data,
    ) -> Result<Arc<Message>, StoreError> {
        let draft = Draft::new(channel.clone(), event, data);
        the_message_stored(self.append_batch(vec![draft]).await)
    }

    /// Stores `drafts` as [`append_batch`](Store::append_batch) does, and
    /// runs `after_commit` with what became of them once they are stored
    /// and the listener told, before this returns; if the append fails,
    /// `after_commit` is dropped unrun. A store that commits on a thread of
    /// its own runs it there, right after the commit, for a whole group of
    /// appends in one pass ([`Store::runs_after_commit_at_commit`]); by
    /// default it runs in the caller's task once the append has returned.
    async fn append_batch_then(
        &self,
        drafts: Vec<Draft>,
        after_commit: AfterCommit,
    ) -> Result<Vec<Appended>, AppendError> {
        let appended = self.append_batch(drafts).await?;
        after_commit(&appended);
        Ok(appended)
    }

    /// True if [`append_batch_then`](Store::append_batch_then) runs its work on the
    /// store's own writer, as soon as the commit is done, rather than in the
    /// caller's task after it resumes.
    fn runs_after_commit_at_commit(&self) -> bool {
        false
    }

    /// Messages of `channel` with `after < seq <= upto`, oldest first, as
    /// many as `limit` allows, and the channel's trimmed-up-to mark (for a
    /// forgotten channel, what is remembered of it).
    async fn read(
        &self,
        channel: &ChannelName,
        after: Seq,
        upto: Seq,
        limit: ReadLimit,
    ) -> Result<History, StoreError>;

    /// Where to read `channel` from to get its newest `count` retained
    /// messages with `seq <= upto`: the position just before the oldest of
    /// them, or the channel's trimmed-up-to mark when it retains no more
    /// than `count` (so no gap is reported for what lies before).
    async fn backlog_start(
        &self,
        channel: &ChannelName,
        count: usize,
        upto: Seq,
    ) -> Result<Seq, StoreError>;

    /// What the store holds of `channel`; `None` if it retains nothing of
    /// it (it never had a message, or all of them were removed).
    async fn summary(&self, channel: &ChannelName) -> Result<Option<ChannelSummary>, StoreError>;

    /// Channels the store holds (those `summary` would answer for), in name
    /// order, starting after `after`, at most `limit`. Costs what the page
    /// costs, not what the store holds.
    async fn channels(
        &self,
        after: Option<&ChannelName>,
        limit: usize,
    ) -> Result<Vec<(ChannelName, ChannelSummary)>, StoreError>;

    /// Applies retention by age to every channel now, not just on access,
    /// in steps: appends are never held up behind a large sweep; and lets
    /// go of idempotency keys beyond their window or their bound (a batch
    /// may take the keys beyond the bound until the next append or this).
    async fn enforce_retention(&self) -> Result<(), StoreError>;

    /// What the store holds now.
    fn footprint(&self) -> Footprint;

    /// Succeeds when the store can accept and serve messages.
    async fn check_health(&self) -> Result<(), StoreError>;

    /// Tells a store shared by several nodes how many subscribers this
    /// node has on each channel it follows (the others have none); the
    /// hub calls it about once a second. A store of one node ignores it.
    async fn share_subscribers(&self, _counts: Vec<(ChannelName, u64)>) -> Result<(), StoreError> {
        Ok(())
    }

    /// Subscribers of `channel` on the other live nodes sharing this
    /// store, as of the last share (0 for a store of one node).
    fn subscribers_elsewhere(&self, _channel: &ChannelName) -> u64 {
        0
    }

    /// Figures for operators beyond the footprint (none by default).
    fn metrics(&self) -> Vec<StoreMetric> {
        Vec::new()
    }
}

/// A figure a store reports for operators beyond its [`Footprint`] (a
/// shared store's connection and lag), shown by the server's metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreMetric {
    /// Its name, without the server's prefix (`redis_feed_lag_messages`).
    pub name: &'static str,
    /// What it means.
    pub help: &'static str,
    /// A counter (only grows) rather than a gauge.
    pub counter: bool,
    /// Its label, when it is one of several figures of the same name
    /// (`("kind", "timeout")`): those are listed together.
    pub label: Option<(&'static str, &'static str)>,
    /// Its value.
    pub value: u64,
}

/// A fresh random epoch for a new history.
pub fn new_epoch() -> Epoch {
    Epoch::from_random(rand::random())
}
