//! Where channel history lives: the [`Store`] trait and what surrounds it.
//!
//! A store keeps, per channel, an append-only log of [`Message`]s numbered by
//! one store-wide [`Seq`], trims it by [`Retention`], and reads it back by
//! position. Every backend (this crate's [`MemoryStore`], the durable embedded
//! store, Redis) implements the same trait and passes the same
//! `conformance` suite (feature `conformance`), so the hub above never knows which one it runs on.
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
mod memory;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
pub use clock::{Clock, ManualClock, SystemClock};
use comet_protocol::{ChannelName, Cursor, Data, Epoch, EventType, Message, Seq};
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
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_messages: 1000,
            max_age: None,
            max_bytes: None,
        }
    }
}

/// What a message counts for against [`Retention::max_bytes`]: its data,
/// event type and channel name, plus a fixed 64 bytes for the id, time and
/// bookkeeping. The same measure in every backend.
pub fn stored_size(message: &Message) -> u64 {
    (message.data().len() + message.event().as_str().len() + message.channel().as_str().len())
        as u64
        + 64
}

/// What every store is built from, whatever the backend.
#[derive(Clone)]
pub struct StoreOptions {
    /// Retention limits.
    pub retention: Retention,
    /// The clock that stamps messages for retention by age.
    pub clock: Arc<dyn Clock>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            retention: Retention::default(),
            clock: Arc::new(SystemClock),
        }
    }
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
}

/// A channel history backend.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The tag of the history this store holds.
    fn epoch(&self) -> Epoch;

    /// The sequence number of the newest stored message (`Seq::ZERO` if none).
    fn head(&self) -> Seq;

    /// Installs the listener that is told of every stored message. A store has
    /// one listener; installing another replaces it.
    fn set_commit_listener(&self, listener: Arc<dyn CommitListener>);

    /// Stores a message at the next sequence number and returns it. When it
    /// returns, the message is stored (durably, for a durable store) and the
    /// listener has been told.
    async fn append(
        &self,
        channel: &ChannelName,
        event: EventType,
        data: Data,
    ) -> Result<Arc<Message>, StoreError>;

    /// Up to `limit` messages of `channel` with `after < seq <= upto`, oldest
    /// first, and the channel's trimmed-up-to mark.
    async fn read(
        &self,
        channel: &ChannelName,
        after: Seq,
        upto: Seq,
        limit: usize,
    ) -> Result<History, StoreError>;

    /// The newest `count` retained messages of `channel` with `seq <= upto`,
    /// oldest first.
    async fn latest(
        &self,
        channel: &ChannelName,
        count: usize,
        upto: Seq,
    ) -> Result<History, StoreError>;

    /// What the store knows of `channel`; `None` if it never had a message
    /// (or, once its whole history expired by age, no longer remembers it).
    async fn summary(&self, channel: &ChannelName) -> Result<Option<ChannelSummary>, StoreError>;

    /// Channels the store knows (those `summary` would answer for), in name
    /// order, starting after `after`, at most `limit`.
    async fn channels(
        &self,
        after: Option<&ChannelName>,
        limit: usize,
    ) -> Result<Vec<(ChannelName, ChannelSummary)>, StoreError>;

    /// Applies retention by age to every channel now, not just on access.
    async fn enforce_retention(&self) -> Result<(), StoreError>;

    /// Succeeds when the store can accept and serve messages.
    async fn check_health(&self) -> Result<(), StoreError>;
}

/// A fresh random epoch for a new history.
pub fn new_epoch() -> Epoch {
    Epoch::from_random(rand::random())
}
