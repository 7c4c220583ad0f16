//! The in-memory store: history for as long as the process lives.
//!
//! One short `std::sync::Mutex` guards the whole store. Appending under it is
//! what makes the store-wide sequence and the listener's order one and the
//! same; the critical section is a few pointer moves, never I/O.
//!
//! Retention by count and age trims each channel from its head. The total
//! byte limit needs the store-wide order of messages, which the per-channel
//! logs do not give: when it is set, a queue of `(seq, channel)` in append
//! order names the oldest message of the store. Entries whose message was
//! already trimmed otherwise are skipped when met, and the queue is
//! compacted when stale entries outnumber live ones, so it stays within
//! twice the retained count.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use comet_protocol::{ChannelName, Cursor, Data, Epoch, EventType, Message, Seq};

use crate::{
    ChannelSummary, Clock, CommitListener, History, Retention, Store, StoreError, StoreOptions,
    new_epoch, stored_size,
};

/// A [`Store`] that keeps everything in memory. A restart begins a new epoch.
pub struct MemoryStore {
    epoch: Epoch,
    retention: Retention,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    head: Seq,
    channels: HashMap<ChannelName, ChannelLog>,
    listener: Option<Arc<dyn CommitListener>>,
    /// The newest sequence number of any channel this store forgot entirely
    /// (its whole history expired). A channel it does not know may have had
    /// messages up to here.
    forgotten_upto: Seq,
    /// Bytes retained, by [`stored_size`].
    bytes: u64,
    /// Messages retained.
    count: usize,
    /// Append order, kept only under a total byte limit.
    order: VecDeque<(Seq, ChannelName)>,
}

#[derive(Default)]
struct ChannelLog {
    messages: VecDeque<Arc<Message>>,
    trimmed_upto: Seq,
    last_seq: Seq,
}

impl ChannelLog {
    fn drop_oldest(&mut self) -> Option<Arc<Message>> {
        let message = self.messages.pop_front()?;
        self.trimmed_upto = message.seq();
        Some(message)
    }

    /// Index of the first message with a sequence number above `seq`.
    fn first_after(&self, seq: Seq) -> usize {
        self.messages.partition_point(|m| m.seq() <= seq)
    }
}

impl Inner {
    /// Removes the oldest message of `channel` and accounts for it.
    fn drop_oldest(&mut self, channel: &ChannelName) -> bool {
        let Some(log) = self.channels.get_mut(channel) else {
            return false;
        };
        match log.drop_oldest() {
            Some(message) => {
                self.bytes -= stored_size(&message);
                self.count -= 1;
                true
            }
            None => false,
        }
    }

    /// Trims `channel` to `max_messages` and drops what is older than
    /// `oldest_kept_ms`.
    fn trim_channel(
        &mut self,
        channel: &ChannelName,
        max_messages: usize,
        oldest_kept_ms: Option<u64>,
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
            if !(too_many || too_old) || !self.drop_oldest(channel) {
                return;
            }
        }
    }

    /// Removes the store's oldest messages until it holds at most
    /// `max_bytes`, never removing the newest message.
    fn trim_to_bytes(&mut self, max_bytes: u64) {
        while self.bytes > max_bytes && self.count > 1 {
            let Some((seq, channel)) = self.order.pop_front() else {
                return;
            };
            let live = self
                .channels
                .get(&channel)
                .and_then(|log| log.messages.front())
                .is_some_and(|front| front.seq() == seq);
            if live {
                self.drop_oldest(&channel);
            }
        }
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

    /// Forgets a channel whose whole history expired.
    fn forget_if_empty(&mut self, channel: &ChannelName) {
        if let Some(log) = self.channels.get(channel)
            && log.messages.is_empty()
        {
            self.forgotten_upto = self.forgotten_upto.max(log.last_seq);
            self.channels.remove(channel);
        }
    }
}

impl MemoryStore {
    /// An empty store with a fresh epoch.
    pub fn new(options: StoreOptions) -> Self {
        Self {
            epoch: new_epoch(),
            retention: options.retention,
            clock: options.clock,
            inner: Mutex::new(Inner::default()),
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

    /// Applies age retention to one channel, forgetting it once empty.
    fn expire(&self, inner: &mut Inner, channel: &ChannelName) {
        if let Some(oldest_kept_ms) = self.oldest_kept_ms() {
            inner.trim_channel(channel, usize::MAX, Some(oldest_kept_ms));
            inner.forget_if_empty(channel);
        }
    }

    /// Some of a channel's messages, chosen by `pick`, after applying age
    /// retention, with the channel's trimmed-up-to mark.
    fn history(
        &self,
        channel: &ChannelName,
        pick: impl FnOnce(&ChannelLog) -> Vec<Arc<Message>>,
    ) -> History {
        let mut inner = self.lock();
        self.expire(&mut inner, channel);
        match inner.channels.get(channel) {
            Some(log) => History {
                messages: pick(log),
                trimmed_upto: log.trimmed_upto,
            },
            None => History {
                messages: Vec::new(),
                trimmed_upto: inner.forgotten_upto,
            },
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

    async fn append(
        &self,
        channel: &ChannelName,
        event: EventType,
        data: Data,
    ) -> Result<Arc<Message>, StoreError> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let seq = inner
            .head
            .checked_next()
            .ok_or(StoreError::SequenceExhausted)?;
        let message = Arc::new(Message::new(
            self.epoch.clone(),
            seq,
            channel.clone(),
            event,
            data,
            now,
        ));
        let forgotten_upto = inner.forgotten_upto;
        let log = inner
            .channels
            .entry(channel.clone())
            .or_insert_with(|| ChannelLog {
                // A channel the store does not remember may have had messages
                // that it forgot; readers from before then get a gap.
                trimmed_upto: forgotten_upto,
                ..ChannelLog::default()
            });
        log.messages.push_back(message.clone());
        log.last_seq = seq;
        inner.bytes += stored_size(&message);
        inner.count += 1;
        inner.head = seq;
        inner.trim_channel(
            channel,
            self.retention.max_messages.max(1),
            self.oldest_kept_ms(),
        );
        if let Some(max_bytes) = self.retention.max_bytes {
            inner.order.push_back((seq, channel.clone()));
            inner.trim_to_bytes(max_bytes);
        }
        if let Some(listener) = &inner.listener {
            listener.committed(&message);
        }
        Ok(message)
    }

    async fn read(
        &self,
        channel: &ChannelName,
        after: Seq,
        upto: Seq,
        limit: usize,
    ) -> Result<History, StoreError> {
        Ok(self.history(channel, |log| {
            log.messages
                .range(log.first_after(after)..)
                .take_while(|m| m.seq() <= upto)
                .take(limit)
                .cloned()
                .collect()
        }))
    }

    async fn latest(
        &self,
        channel: &ChannelName,
        count: usize,
        upto: Seq,
    ) -> Result<History, StoreError> {
        Ok(self.history(channel, |log| {
            let end = log.first_after(upto);
            let start = end.saturating_sub(count);
            log.messages.range(start..end).cloned().collect()
        }))
    }

    async fn summary(&self, channel: &ChannelName) -> Result<Option<ChannelSummary>, StoreError> {
        let mut inner = self.lock();
        self.expire(&mut inner, channel);
        Ok(inner.channels.get(channel).map(|log| ChannelSummary {
            retained: log.messages.len() as u64,
            last_id: Cursor::new(self.epoch.clone(), log.last_seq),
        }))
    }

    async fn channels(
        &self,
        after: Option<&ChannelName>,
        limit: usize,
    ) -> Result<Vec<(ChannelName, ChannelSummary)>, StoreError> {
        let inner = self.lock();
        let mut names: Vec<&ChannelName> = inner
            .channels
            .keys()
            .filter(|name| after.is_none_or(|after| *name > after))
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .take(limit)
            .map(|name| {
                let log = &inner.channels[name];
                let summary = ChannelSummary {
                    retained: log.messages.len() as u64,
                    last_id: Cursor::new(self.epoch.clone(), log.last_seq),
                };
                (name.clone(), summary)
            })
            .collect())
    }

    async fn enforce_retention(&self) -> Result<(), StoreError> {
        if self.retention.max_age.is_none() {
            return Ok(());
        }
        let mut inner = self.lock();
        let names: Vec<ChannelName> = inner.channels.keys().cloned().collect();
        for name in names {
            self.expire(&mut inner, &name);
        }
        Ok(())
    }

    async fn check_health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
