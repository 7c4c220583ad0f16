//! The in-memory store: history for as long as the process lives.
//!
//! One short `std::sync::Mutex` guards the whole store. Appending under it is
//! what makes the store-wide sequence and the listener's order one and the
//! same; the critical section is a few pointer moves, never I/O, and no
//! step under the lock grows with the number of channels:
//!
//! - `order`, a queue of `(seq, channel)` in append order, names the oldest
//!   message of the store: the total byte limit trims from its front, and
//!   so does the age sweep (times follow append order), each touching only
//!   what it removes. Entries whose message was already trimmed otherwise
//!   are skipped when met, and the queue is compacted when stale entries
//!   outnumber live ones, so it stays within about twice the retained count;
//! - `names`, the held channels in name order, answers a page of the
//!   channel list without sorting anything;
//! - a channel whose last retained message goes is forgotten at once, its
//!   log replaced by a tombstone (see `crate::forgotten`), and the
//!   tombstones themselves are bounded: the oldest fold into fixed marks.
//!
//! Age sweeps run in steps of [`SWEEP_STEP`] removals per lock.
//!
//! The listener is told of a message after the lock is let go, under a
//! second lock taken before the first is released: announcements keep the
//! sequence's order, while reads, listings and the next append's own work
//! never wait for an announcement (which releases the channel's parked
//! polls: about 45 ns each, measured by `comet-hub`'s `parked` bench).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use comet_protocol::{ChannelName, Cursor, Data, Epoch, EventType, Message, Seq};

use crate::forgotten::FoldedMarks;
use crate::idempotency::{DraftedKeys, Fingerprint, KeyHash, KeyRecord, KeyTable, Planned, plan};
use crate::{
    AppendError, Appended, ChannelSummary, Clock, CommitListener, Draft, Footprint, History,
    IdempotencyOptions, Original, ReadLimit, Retention, Store, StoreError, StoreOptions, new_epoch,
    stored_size,
};

/// Most messages an age sweep removes under one hold of the lock.
pub const SWEEP_STEP: usize = 4096;

/// A [`Store`] that keeps everything in memory. A restart begins a new epoch.
pub struct MemoryStore {
    epoch: Epoch,
    retention: Retention,
    idempotency: IdempotencyOptions,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
    /// Held while the listener is told of a message; taken before `inner`
    /// is let go, so announcements follow the sequence.
    announcing: Mutex<()>,
}

#[derive(Default)]
struct Inner {
    head: Seq,
    /// Channels with at least one retained message.
    channels: HashMap<ChannelName, ChannelLog>,
    /// The same channels, in name order.
    names: BTreeSet<ChannelName>,
    forgotten: Tombstones,
    listener: Option<Arc<dyn CommitListener>>,
    /// Bytes retained, by [`stored_size`].
    bytes: u64,
    /// Messages retained.
    count: usize,
    /// Append order (see the module doc).
    order: VecDeque<(Seq, ChannelName)>,
    /// Idempotency keys of recent publishes.
    keys: KeyTable,
}

struct ChannelLog {
    messages: VecDeque<Arc<Message>>,
    trimmed_upto: Seq,
    last_seq: Seq,
}

impl ChannelLog {
    /// Index of the first message with a sequence number above `seq`.
    fn first_after(&self, seq: Seq) -> usize {
        self.messages.partition_point(|m| m.seq() <= seq)
    }
}

/// Forgotten channels: exact tombstones, most recent first, up to a bound;
/// the rest folded into marks.
#[derive(Default)]
struct Tombstones {
    last_seq: HashMap<ChannelName, Seq>,
    /// In the order they were forgotten; an entry whose channel came back
    /// (or was forgotten again later) is stale and skipped.
    order: VecDeque<(ChannelName, Seq)>,
    folded: FoldedMarks,
}

impl Tombstones {
    fn forget(&mut self, channel: ChannelName, last_seq: Seq, keep: usize) {
        self.last_seq.insert(channel.clone(), last_seq);
        self.order.push_back((channel, last_seq));
        while self.last_seq.len() > keep {
            let Some((oldest, seq)) = self.order.pop_front() else {
                break;
            };
            if self.last_seq.get(&oldest) == Some(&seq) {
                self.last_seq.remove(&oldest);
                self.folded.fold(&oldest, seq);
            }
        }
        if self.order.len() > 2 * self.last_seq.len() + 1024 {
            let current = &self.last_seq;
            self.order
                .retain(|(channel, seq)| current.get(channel) == Some(seq));
        }
    }

    /// What is remembered of `channel`: the last sequence number it may
    /// have had.
    fn trimmed_upto(&self, channel: &ChannelName) -> Seq {
        match self.last_seq.get(channel) {
            Some(seq) => *seq,
            None => self.folded.mark(channel),
        }
    }

    /// The channel is held again: its tombstone goes, and its new log
    /// starts from what was remembered.
    fn revive(&mut self, channel: &ChannelName) -> Seq {
        match self.last_seq.remove(channel) {
            Some(seq) => seq,
            None => self.folded.mark(channel),
        }
    }
}

impl Inner {
    /// Removes the oldest message of `channel` and accounts for it; a
    /// channel left with nothing is forgotten.
    fn drop_oldest(&mut self, channel: &ChannelName, keep_forgotten: usize) -> bool {
        let Some(log) = self.channels.get_mut(channel) else {
            return false;
        };
        let Some(message) = log.messages.pop_front() else {
            return false;
        };
        log.trimmed_upto = message.seq();
        self.bytes -= stored_size(&message);
        self.count -= 1;
        if log.messages.is_empty() {
            let last_seq = log.last_seq;
            self.channels.remove(channel);
            self.names.remove(channel);
            self.forgotten
                .forget(channel.clone(), last_seq, keep_forgotten);
        }
        true
    }

    /// Trims `channel` to `max_messages` and drops what is older than
    /// `oldest_kept_ms`.
    fn trim_channel(
        &mut self,
        channel: &ChannelName,
        max_messages: usize,
        oldest_kept_ms: Option<u64>,
        keep_forgotten: usize,
    ) {
        loop {
            let Some(log) = self.channels.get(channel) else {
                return;
            };
            let too_many = log.messages.len() > max_messages;
            let too_old = oldest_kept_ms.is_some_and(|oldest| {
                log.messages
                    .front()
                    .is_some_and(|m| m.published_at_ms() < oldest)
            });
            if !(too_many || too_old) || !self.drop_oldest(channel, keep_forgotten) {
                return;
            }
        }
    }

    /// The oldest message of the store, skipping (and dropping) stale
    /// queue entries: its channel and whether it is older than
    /// `oldest_kept_ms`.
    fn oldest(&mut self) -> Option<(ChannelName, u64)> {
        loop {
            let (seq, channel) = self.order.front()?;
            let front = self
                .channels
                .get(channel)
                .and_then(|log| log.messages.front())
                .filter(|front| front.seq() == *seq)
                .map(|front| front.published_at_ms());
            match front {
                Some(published_at) => return Some((channel.clone(), published_at)),
                None => {
                    self.order.pop_front();
                }
            }
        }
    }

    /// Removes the store's oldest messages until it holds at most
    /// `max_bytes`, never removing the newest message.
    fn trim_to_bytes(&mut self, max_bytes: u64, keep_forgotten: usize) {
        while self.bytes > max_bytes && self.count > 1 {
            let Some((channel, _)) = self.oldest() else {
                return;
            };
            self.order.pop_front();
            self.drop_oldest(&channel, keep_forgotten);
        }
        self.compact_order();
    }

    /// Removes up to `at_most` messages published before `oldest_kept_ms`,
    /// oldest first; true if more may remain.
    fn expire_oldest(
        &mut self,
        oldest_kept_ms: u64,
        at_most: usize,
        keep_forgotten: usize,
    ) -> bool {
        for _ in 0..at_most {
            let Some((channel, published_at)) = self.oldest() else {
                return false;
            };
            if published_at >= oldest_kept_ms {
                return false;
            }
            self.order.pop_front();
            self.drop_oldest(&channel, keep_forgotten);
        }
        self.compact_order();
        true
    }

    fn compact_order(&mut self) {
        if self.order.len() > 2 * self.count + 1024 {
            let channels = &self.channels;
            self.order.retain(|(seq, channel)| {
                channels
                    .get(channel)
                    .and_then(|log| log.messages.front())
                    .is_some_and(|front| front.seq() <= *seq)
            });
        }
    }
}

impl MemoryStore {
    /// An empty store with a fresh epoch.
    pub fn new(options: StoreOptions) -> Self {
        Self {
            epoch: new_epoch(),
            retention: options.retention,
            idempotency: options.idempotency,
            clock: options.clock,
            inner: Mutex::new(Inner::default()),
            announcing: Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the data consistent (every
        // mutation is completed before anything that can panic), so a
        // poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn oldest_kept_ms(&self) -> Option<u64> {
        let max_age = self.retention.max_age?;
        Some(
            self.clock
                .now_ms()
                .saturating_sub(max_age.as_millis() as u64),
        )
    }

    /// Applies age retention to one channel (forgetting it once empty).
    fn expire(&self, inner: &mut Inner, channel: &ChannelName) {
        if let Some(oldest_kept_ms) = self.oldest_kept_ms() {
            inner.trim_channel(
                channel,
                usize::MAX,
                Some(oldest_kept_ms),
                self.retention.forgotten_channels,
            );
        }
    }

    /// Some of a channel's messages, chosen by `pick`, after applying age
    /// retention, with the channel's trimmed-up-to mark.
    fn history<T>(
        &self,
        channel: &ChannelName,
        pick: impl FnOnce(&ChannelLog) -> T,
        forgotten: impl FnOnce(Seq) -> T,
    ) -> T {
        let mut inner = self.lock();
        self.expire(&mut inner, channel);
        match inner.channels.get(channel) {
            Some(log) => pick(log),
            None => forgotten(inner.forgotten.trimmed_upto(channel)),
        }
    }

    /// Stores `draft` at the next sequence number (the caller checked
    /// there is one), remembers its key, and applies retention.
    fn store_one(&self, inner: &mut Inner, draft: Draft, now: u64) -> Arc<Message> {
        let keep_forgotten = self.retention.forgotten_channels;
        let seq = Seq(inner.head.0 + 1);
        let Draft {
            channel,
            event,
            data,
            idempotency_key,
            subscribers,
        } = draft;
        if let Some(key) = idempotency_key {
            let record = KeyRecord {
                fingerprint: Fingerprint::of(&event, data.bytes()),
                original: Original { seq, subscribers },
                at_ms: now,
            };
            inner.keys.remember(KeyHash::of(&channel, &key), record);
        }
        let message = Arc::new(Message::new(
            self.epoch.clone(),
            seq,
            channel.clone(),
            event,
            data,
            now,
        ));
        if let Some(log) = inner.channels.get_mut(&channel) {
            log.messages.push_back(message.clone());
            log.last_seq = seq;
        } else {
            // A channel this store forgot may have had messages: readers
            // from before then get a gap.
            let trimmed_upto = inner.forgotten.revive(&channel);
            inner.channels.insert(
                channel.clone(),
                ChannelLog {
                    messages: VecDeque::from([message.clone()]),
                    trimmed_upto,
                    last_seq: seq,
                },
            );
            inner.names.insert(channel.clone());
        }
        inner.bytes += stored_size(&message);
        inner.count += 1;
        inner.head = seq;
        if self.retention.max_bytes.is_some() || self.retention.max_age.is_some() {
            // Only the byte limit and the age sweep need the store-wide
            // order.
            inner.order.push_back((seq, channel.clone()));
        }
        inner.trim_channel(
            &channel,
            self.retention.max_messages.max(1),
            self.oldest_kept_ms(),
            keep_forgotten,
        );
        if let Some(max_bytes) = self.retention.max_bytes {
            inner.trim_to_bytes(max_bytes, keep_forgotten);
        }
        message
    }

    /// Finishes an append: tidies the order queue, lets go of the store's
    /// lock and tells the listener of `stored`, in order, under the
    /// announcing lock (taken before the store's is let go).
    fn announce<'a>(
        &self,
        mut guard: MutexGuard<'_, Inner>,
        stored: impl Iterator<Item = &'a Arc<Message>>,
    ) {
        if self.retention.max_bytes.is_none() {
            guard.compact_order();
        }
        let listener = guard.listener.clone();
        let announcing = self.announcing.lock().unwrap_or_else(|e| e.into_inner());
        drop(guard);
        if let Some(listener) = listener {
            for message in stored {
                listener.committed(message);
            }
        }
        drop(announcing);
    }

    fn summary_of(&self, log: &ChannelLog) -> ChannelSummary {
        ChannelSummary {
            retained: log.messages.len() as u64,
            last_id: Cursor::new(self.epoch.clone(), log.last_seq),
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn epoch(&self) -> Epoch {
        self.epoch.clone()
    }

    fn head(&self) -> Seq {
        self.lock().head
    }

    fn set_commit_listener(&self, listener: Arc<dyn CommitListener>) {
        self.lock().listener = Some(listener);
    }

    async fn append_batch(&self, drafts: Vec<Draft>) -> Result<Vec<Appended>, AppendError> {
        let now = self.clock.now_ms();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let oldest_key_kept = self.idempotency.oldest_kept_ms(now);
        inner
            .keys
            .forget_old(oldest_key_kept, self.idempotency.max_keys);
        let planned = plan(
            &inner.keys,
            &drafts,
            &DraftedKeys::new(),
            inner.head,
            oldest_key_kept,
        )?;
        let stored_count = planned.stored(drafts.len()) as u64;
        if inner.head.0.checked_add(stored_count).is_none() {
            return Err(StoreError::SequenceExhausted.into());
        }
        let mut appended = Vec::with_capacity(drafts.len());
        for (index, draft) in drafts.into_iter().enumerate() {
            appended.push(match planned.of(index) {
                Planned::Repeat(original) => Appended::Repeat(original),
                Planned::Store => Appended::Stored(self.store_one(inner, draft, now)),
            });
        }
        inner
            .keys
            .forget_old(oldest_key_kept, self.idempotency.max_keys);
        self.announce(
            guard,
            appended.iter().filter_map(|outcome| match outcome {
                Appended::Stored(message) => Some(message),
                Appended::Repeat(_) => None,
            }),
        );
        Ok(appended)
    }

    /// One message without a key: the batch path without its bookkeeping
    /// (this is every plain publish).
    async fn append(
        &self,
        channel: &ChannelName,
        event: EventType,
        data: Data,
    ) -> Result<Arc<Message>, StoreError> {
        let now = self.clock.now_ms();
        let mut guard = self.lock();
        if guard.head.checked_next().is_none() {
            return Err(StoreError::SequenceExhausted);
        }
        let message = self.store_one(&mut guard, Draft::new(channel.clone(), event, data), now);
        self.announce(guard, std::iter::once(&message));
        Ok(message)
    }

    async fn read(
        &self,
        channel: &ChannelName,
        after: Seq,
        upto: Seq,
        limit: ReadLimit,
    ) -> Result<History, StoreError> {
        Ok(self.history(
            channel,
            |log| {
                let candidates = log
                    .messages
                    .range(log.first_after(after)..)
                    .take_while(|m| m.seq() <= upto);
                let count = limit.fits(candidates.clone().map(|m| stored_size(m)));
                History {
                    truncated: candidates.clone().nth(count).is_some(),
                    messages: candidates.take(count).cloned().collect(),
                    trimmed_upto: log.trimmed_upto,
                }
            },
            |trimmed_upto| History {
                messages: Vec::new(),
                trimmed_upto,
                truncated: false,
            },
        ))
    }

    async fn backlog_start(
        &self,
        channel: &ChannelName,
        count: usize,
        upto: Seq,
    ) -> Result<Seq, StoreError> {
        Ok(self.history(
            channel,
            |log| {
                let end = log.first_after(upto);
                match end.checked_sub(count + 1) {
                    Some(before) => log.messages[before].seq(),
                    None => log.trimmed_upto,
                }
            },
            |trimmed_upto| trimmed_upto,
        ))
    }

    async fn summary(&self, channel: &ChannelName) -> Result<Option<ChannelSummary>, StoreError> {
        Ok(self.history(channel, |log| Some(self.summary_of(log)), |_| None))
    }

    async fn channels(
        &self,
        after: Option<&ChannelName>,
        limit: usize,
    ) -> Result<Vec<(ChannelName, ChannelSummary)>, StoreError> {
        let inner = self.lock();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(inner
            .names
            .range((start, Bound::Unbounded))
            .take(limit)
            .filter_map(|name| {
                let log = inner.channels.get(name)?;
                Some((name.clone(), self.summary_of(log)))
            })
            .collect())
    }

    async fn enforce_retention(&self) -> Result<(), StoreError> {
        {
            let oldest_key_kept = self.idempotency.oldest_kept_ms(self.clock.now_ms());
            let mut inner = self.lock();
            inner
                .keys
                .forget_old(oldest_key_kept, self.idempotency.max_keys);
        }
        loop {
            let Some(oldest_kept_ms) = self.oldest_kept_ms() else {
                return Ok(());
            };
            let more = self.lock().expire_oldest(
                oldest_kept_ms,
                SWEEP_STEP,
                self.retention.forgotten_channels,
            );
            if !more {
                return Ok(());
            }
            // Let publishers in between steps.
            yield_now().await;
        }
    }

    fn footprint(&self) -> Footprint {
        let inner = self.lock();
        Footprint {
            channels: inner.channels.len() as u64,
            forgotten_channels: inner.forgotten.last_seq.len() as u64,
            messages: inner.count as u64,
            bytes: inner.bytes,
            idempotency_keys: inner.keys.len() as u64,
        }
    }

    async fn check_health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Gives other tasks a turn, without depending on a runtime: this crate's
/// stores run under any executor.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}
