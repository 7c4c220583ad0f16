//! The in-memory store: history for as long as the process lives.
//!
//! One short `std::sync::Mutex` guards the whole store. Appending under it is
//! what makes the store-wide sequence and the listener's order one and the
//! same; the critical section is a few pointer moves, never I/O.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use comet_protocol::{ChannelName, Cursor, Data, Epoch, EventType, Message, Seq};

use crate::{
    ChannelSummary, Clock, CommitListener, History, Retention, Store, StoreError, StoreOptions,
    new_epoch,
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
}

#[derive(Default)]
struct ChannelLog {
    messages: VecDeque<Arc<Message>>,
    trimmed_upto: Seq,
    last_seq: Seq,
}

impl ChannelLog {
    fn trim_to(&mut self, max_messages: usize) {
        while self.messages.len() > max_messages {
            self.drop_oldest();
        }
    }

    fn trim_older_than(&mut self, oldest_kept_ms: u64) {
        while self
            .messages
            .front()
            .is_some_and(|m| m.published_at_ms() < oldest_kept_ms)
        {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some(message) = self.messages.pop_front() {
            self.trimmed_upto = message.seq();
        }
    }

    /// Index of the first message with a sequence number above `seq`.
    fn first_after(&self, seq: Seq) -> usize {
        self.messages.partition_point(|m| m.seq() <= seq)
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

    /// Applies age retention to one channel, forgetting it once empty.
    fn expire(&self, inner: &mut Inner, channel: &ChannelName) {
        let Some(oldest_kept_ms) = self.oldest_kept_ms() else {
            return;
        };
        let Some(log) = inner.channels.get_mut(channel) else {
            return;
        };
        log.trim_older_than(oldest_kept_ms);
        if log.messages.is_empty() {
            let last = log.last_seq;
            inner.channels.remove(channel);
            inner.forgotten_upto = inner.forgotten_upto.max(last);
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
        let seq = inner.head.next();
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
        log.trim_to(self.retention.max_messages.max(1));
        if let Some(oldest_kept_ms) = self.oldest_kept_ms() {
            log.trim_older_than(oldest_kept_ms);
        }
        inner.head = seq;
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
