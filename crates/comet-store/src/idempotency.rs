//! What a store keeps so that a retried publish is stored once: the
//! idempotency keys of recent publishes, per channel, each with a
//! fingerprint of what it published and the answer it got.
//!
//! A keyed publish is looked up before anything is stored:
//! - the key is new (or its window passed): the message is stored and the
//!   key remembered with it, in the same step (for a durable store, the
//!   same transaction), so a crash keeps both or neither;
//! - the key is known with the same event type and data: nothing is stored,
//!   the original's position and subscriber count are the answer;
//! - the key is known with other content: a conflict, and nothing of the
//!   batch is stored.
//!
//! Keys are bounded two ways ([`IdempotencyOptions`]): by age (the window)
//! and by count (the oldest go first once there are more). Content is
//! compared by a 128-bit prefix of its SHA-256 ([`Fingerprint`]), so a
//! remembered key costs the same whatever the message's size.
//!
//! [`KeyTable`] is the in-memory form, used by the memory store.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use comet_protocol::{ChannelName, EventType, IdempotencyKey, Seq};

/// How long and how many keys a store remembers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdempotencyOptions {
    /// A repeat within this long of the original is recognized.
    pub window: Duration,
    /// The most keys remembered; beyond it the oldest are let go before
    /// their window ends (counted in the store's footprint).
    pub max_keys: usize,
}

impl Default for IdempotencyOptions {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(24 * 3600),
            max_keys: 1_000_000,
        }
    }
}

impl IdempotencyOptions {
    /// Keys remembered at or after this time (milliseconds since the Unix
    /// epoch) are within the window at `now_ms`.
    pub fn oldest_kept_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.window.as_millis() as u64)
    }
}

/// What a keyed publish published: compared to tell a repeat from a
/// conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// The fingerprint of an event type and data.
    pub fn of(event: &EventType, data: &[u8]) -> Self {
        let mut input = Vec::with_capacity(1 + event.as_str().len() + data.len());
        // The event type is at most 64 bytes: its length fits a byte and
        // keeps `("ab", "c")` apart from `("a", "bc")`.
        input.push(event.as_str().len() as u8);
        input.extend_from_slice(event.as_str().as_bytes());
        input.extend_from_slice(data);
        let hash = digest(&SHA256, &input);
        let mut prefix = [0; 16];
        prefix.copy_from_slice(&hash.as_ref()[..16]);
        Self(prefix)
    }
}

/// The answer a keyed publish got, given again to its repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Original {
    /// Where the message was stored.
    pub seq: Seq,
    /// The subscribers reported when it was published.
    pub subscribers: u64,
}

/// A remembered key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// What it published.
    pub fingerprint: Fingerprint,
    /// The answer it got.
    pub original: Original,
    /// When (milliseconds since the Unix epoch).
    pub at_ms: u64,
}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not remembered (or remembered beyond the window): store it.
    New,
    /// Remembered with the same content: a repeat.
    Repeat(Original),
    /// Remembered with other content.
    Conflict,
}

impl Lookup {
    /// Judges a publish of `fingerprint` against what is remembered of its
    /// key, if anything, at `oldest_kept_ms`.
    pub fn judge(
        record: Option<&KeyRecord>,
        fingerprint: Fingerprint,
        oldest_kept_ms: u64,
    ) -> Self {
        match record {
            Some(record) if record.at_ms >= oldest_kept_ms => {
                if record.fingerprint == fingerprint {
                    Self::Repeat(record.original)
                } else {
                    Self::Conflict
                }
            }
            _ => Self::New,
        }
    }
}

/// Remembered keys in memory, oldest first.
#[derive(Default)]
pub struct KeyTable {
    records: HashMap<(ChannelName, IdempotencyKey), KeyRecord>,
    /// Keys in the order they were remembered (so by time), with that
    /// time: an entry whose key was remembered again since is stale and
    /// skipped.
    order: VecDeque<(u64, ChannelName, IdempotencyKey)>,
}

impl KeyTable {
    /// What is remembered of `key` on `channel`.
    pub fn get(&self, channel: &ChannelName, key: &IdempotencyKey) -> Option<&KeyRecord> {
        self.records.get(&(channel.clone(), key.clone()))
    }

    /// Remembers `key` on `channel` (replacing what was remembered of it
    /// beyond the window).
    pub fn remember(&mut self, channel: ChannelName, key: IdempotencyKey, record: KeyRecord) {
        self.order
            .push_back((record.at_ms, channel.clone(), key.clone()));
        self.records.insert((channel, key), record);
    }

    /// Lets go of keys older than `oldest_kept_ms`, and of the oldest ones
    /// beyond `max_keys`.
    pub fn forget_old(&mut self, oldest_kept_ms: u64, max_keys: usize) {
        while let Some((at_ms, channel, key)) = self.order.pop_front() {
            let entry = (channel, key);
            let current = self
                .records
                .get(&entry)
                .is_some_and(|record| record.at_ms == at_ms);
            if !current {
                continue;
            }
            if at_ms >= oldest_kept_ms && self.records.len() <= max_keys {
                self.order.push_front((at_ms, entry.0, entry.1));
                return;
            }
            self.records.remove(&entry);
        }
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> ChannelName {
        ChannelName::new(text).unwrap()
    }

    fn key(text: &str) -> IdempotencyKey {
        IdempotencyKey::new(text).unwrap()
    }

    fn record(seq: u64, at_ms: u64) -> KeyRecord {
        KeyRecord {
            fingerprint: Fingerprint::of(&EventType::message(), seq.to_string().as_bytes()),
            original: Original {
                seq: Seq(seq),
                subscribers: 0,
            },
            at_ms,
        }
    }

    #[test]
    fn fingerprints_tell_event_and_data_apart() {
        let message = EventType::message();
        let ab = EventType::new("ab").unwrap();
        let a = EventType::new("a").unwrap();
        assert_eq!(
            Fingerprint::of(&message, b"x"),
            Fingerprint::of(&message, b"x")
        );
        assert_ne!(
            Fingerprint::of(&message, b"x"),
            Fingerprint::of(&message, b"y")
        );
        assert_ne!(Fingerprint::of(&ab, b"c"), Fingerprint::of(&a, b"bc"));
    }

    #[test]
    fn a_lookup_is_new_a_repeat_or_a_conflict() {
        let kept = record(1, 1_000);
        let same = kept.fingerprint;
        let other = Fingerprint::of(&EventType::message(), b"other");
        assert_eq!(Lookup::judge(None, same, 0), Lookup::New);
        assert_eq!(
            Lookup::judge(Some(&kept), same, 1_000),
            Lookup::Repeat(kept.original)
        );
        assert_eq!(Lookup::judge(Some(&kept), other, 1_000), Lookup::Conflict);
        assert_eq!(Lookup::judge(Some(&kept), other, 1_001), Lookup::New);
    }

    #[test]
    fn the_table_forgets_by_age_and_beyond_its_bound() {
        let mut table = KeyTable::default();
        for i in 0..10 {
            table.remember(name("c"), key(&format!("k{i}")), record(i, i * 100));
        }
        table.forget_old(300, 100);
        assert_eq!(table.len(), 7);
        assert!(table.get(&name("c"), &key("k2")).is_none());
        assert!(table.get(&name("c"), &key("k3")).is_some());
        table.forget_old(0, 4);
        assert_eq!(table.len(), 4);
        assert!(table.get(&name("c"), &key("k5")).is_none());
        assert!(table.get(&name("c"), &key("k6")).is_some());
        assert!(table.get(&name("other"), &key("k9")).is_none());
    }
}
