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
//! and by count (the oldest go first once there are more). A key is known
//! by a 128-bit prefix of the SHA-256 of its channel and itself
//! ([`KeyHash`]), and content by one of its event type and data
//! ([`Fingerprint`]): a remembered key costs the same whatever the key's
//! and the message's size.
//!
//! [`plan`] judges an append's drafts before anything is stored, for
//! both stores.
//!
//! [`KeyTable`] holds them in memory, oldest first: the memory store's keys,
//! and the durable store's index of the keys it keeps on disk (looked up
//! without reading the disk; rows appended in sequence order, so
//! remembering and forgetting touch the end and the start of one table).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use comet_protocol::{ChannelName, EventType, IdempotencyKey, Seq};

use crate::{AppendError, Draft};

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

/// The first 128 bits of the SHA-256 of `short` (at most 255 bytes, its
/// length first so that `("ab", "c")` and `("a", "bc")` differ) and `rest`.
fn digest_of(short: &[u8], rest: &[u8]) -> [u8; 16] {
    let mut input = Vec::with_capacity(1 + short.len() + rest.len());
    input.push(short.len() as u8);
    input.extend_from_slice(short);
    input.extend_from_slice(rest);
    let hash = digest(&SHA256, &input);
    let mut prefix = [0; 16];
    prefix.copy_from_slice(&hash.as_ref()[..16]);
    prefix
}

/// Which key of which channel: what keys are looked up by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 16]);

impl KeyHash {
    /// The hash of `key` on `channel` (a channel name is at most 200
    /// bytes).
    pub fn of(channel: &ChannelName, key: &IdempotencyKey) -> Self {
        Self(digest_of(
            channel.as_str().as_bytes(),
            key.as_str().as_bytes(),
        ))
    }
}

/// What a keyed publish published: compared to tell a repeat from a
/// conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// The fingerprint of an event type (at most 64 bytes) and data.
    pub fn of(event: &EventType, data: &[u8]) -> Self {
        Self(digest_of(event.as_str().as_bytes(), data))
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

/// What a draft will be, judged before anything is numbered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Planned {
    /// Stored.
    Store,
    /// A repeat of a stored publish.
    Repeat(Original),
}

/// What the drafts of one append will be.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Every draft is stored: none carries an idempotency key (the common
    /// case, judged without a list).
    AllStored,
    /// Each draft's fate, in the drafts' order.
    Each(Vec<Planned>),
}

impl Plan {
    /// The fate of the draft at `index`.
    pub fn of(&self, index: usize) -> Planned {
        match self {
            Plan::AllStored => Planned::Store,
            Plan::Each(planned) => planned[index],
        }
    }

    /// How many of `count` drafts are stored.
    pub fn stored(&self, count: usize) -> usize {
        match self {
            Plan::AllStored => count,
            Plan::Each(planned) => planned.iter().filter(|p| **p == Planned::Store).count(),
        }
    }
}

/// Keys drafted but not yet remembered (by earlier appends stored with
/// this one, or earlier drafts of it), with what they stored.
pub type DraftedKeys = HashMap<KeyHash, (Fingerprint, Original)>;

/// What each of an append's `drafts` will be, judged before anything is
/// stored: each key is looked up among the keys drafted before it (in this
/// append, then in `drafted`) and those `remembered`; the drafts stored are
/// numbered from after `head`. A key reused for other content fails the
/// whole append.
pub fn plan(
    remembered: &KeyTable,
    drafts: &[Draft],
    drafted: &DraftedKeys,
    head: Seq,
    oldest_kept_ms: u64,
) -> Result<Plan, AppendError> {
    if drafts.iter().all(|draft| draft.idempotency_key.is_none()) {
        return Ok(Plan::AllStored);
    }
    let mut planned = Vec::with_capacity(drafts.len());
    let mut this_append = DraftedKeys::new();
    let mut next = head.0;
    for (index, draft) in drafts.iter().enumerate() {
        let Some(key) = &draft.idempotency_key else {
            next = next.saturating_add(1);
            planned.push(Planned::Store);
            continue;
        };
        let fingerprint = Fingerprint::of(&draft.event, draft.data.bytes());
        let hash = KeyHash::of(&draft.channel, key);
        let lookup = match this_append.get(&hash).or_else(|| drafted.get(&hash)) {
            Some((earlier, original)) if *earlier == fingerprint => Lookup::Repeat(*original),
            Some(_) => Lookup::Conflict,
            None => Lookup::judge(remembered.get(&hash), fingerprint, oldest_kept_ms),
        };
        match lookup {
            Lookup::Repeat(original) => planned.push(Planned::Repeat(original)),
            Lookup::Conflict => return Err(AppendError::IdempotencyConflict { index }),
            Lookup::New => {
                next = next.saturating_add(1);
                let original = Original {
                    seq: Seq(next),
                    subscribers: draft.subscribers,
                };
                this_append.insert(hash, (fingerprint, original));
                planned.push(Planned::Store);
            }
        }
    }
    Ok(Plan::Each(planned))
}

/// Remembered keys in memory, oldest first.
#[derive(Default)]
pub struct KeyTable {
    records: HashMap<KeyHash, KeyRecord>,
    /// Keys in the order they were remembered (so by time and by
    /// position), with their position: an entry whose key was remembered
    /// again since is stale, and lets go of nothing.
    order: VecDeque<(KeyHash, Seq)>,
}

impl KeyTable {
    /// What is remembered of a key.
    pub fn get(&self, key: &KeyHash) -> Option<&KeyRecord> {
        self.records.get(key)
    }

    /// Remembers a key (replacing what was remembered of it beyond the
    /// window). Keys are remembered in position order.
    pub fn remember(&mut self, key: KeyHash, record: KeyRecord) {
        self.order.push_back((key, record.original.seq));
        self.records.insert(key, record);
    }

    /// How many of the oldest entries to let go so that, with `adding`
    /// more, none is older than `oldest_kept_ms` and at most `max_keys`
    /// remain; and the position of the last of them.
    pub fn to_forget(&self, oldest_kept_ms: u64, max_keys: usize, adding: usize) -> (usize, Seq) {
        let excess = (self.records.len() + adding).saturating_sub(max_keys);
        let mut count = 0;
        let mut last = Seq::ZERO;
        for (key, seq) in &self.order {
            let expired = self
                .records
                .get(key)
                .is_none_or(|record| record.original.seq != *seq || record.at_ms < oldest_kept_ms);
            if !expired && count >= excess {
                break;
            }
            count += 1;
            last = *seq;
        }
        (count, last)
    }

    /// Lets go of the `count` oldest entries.
    pub fn forget_oldest(&mut self, count: usize) {
        for _ in 0..count {
            let Some((key, seq)) = self.order.pop_front() else {
                return;
            };
            if self
                .records
                .get(&key)
                .is_some_and(|record| record.original.seq == seq)
            {
                self.records.remove(&key);
            }
        }
    }

    /// Lets go of keys older than `oldest_kept_ms`, and of the oldest ones
    /// beyond `max_keys`.
    pub fn forget_old(&mut self, oldest_kept_ms: u64, max_keys: usize) {
        let (count, _) = self.to_forget(oldest_kept_ms, max_keys, 0);
        self.forget_oldest(count);
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
        let hash = |i: u64| KeyHash::of(&name("c"), &key(&format!("k{i}")));
        let mut table = KeyTable::default();
        for i in 1..=10 {
            table.remember(hash(i), record(i, i * 100));
        }
        assert_eq!(table.to_forget(350, 100, 0), (3, Seq(3)));
        assert_eq!(table.to_forget(0, 8, 1), (3, Seq(3)), "room for one more");
        table.forget_old(350, 100);
        assert_eq!(table.len(), 7);
        assert!(table.get(&hash(3)).is_none());
        assert!(table.get(&hash(4)).is_some());
        table.forget_old(0, 4);
        assert_eq!(table.len(), 4);
        assert!(table.get(&hash(6)).is_none());
        assert!(table.get(&hash(7)).is_some());
        assert!(
            table
                .get(&KeyHash::of(&name("other"), &key("k9")))
                .is_none()
        );
    }

    #[test]
    fn a_key_remembered_again_outlives_its_first_entry() {
        let mut table = KeyTable::default();
        let k = KeyHash::of(&name("c"), &key("k"));
        table.remember(k, record(1, 100));
        table.remember(KeyHash::of(&name("c"), &key("other")), record(2, 200));
        table.remember(k, record(3, 300));
        table.forget_old(150, 100);
        assert_eq!(table.get(&k).map(|r| r.original.seq), Some(Seq(3)));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn keys_hash_apart_by_channel_and_key() {
        let a = KeyHash::of(&name("ab"), &key("c"));
        assert_ne!(a, KeyHash::of(&name("a"), &key("bc")));
        assert_ne!(a, KeyHash::of(&name("ab"), &key("d")));
        assert_eq!(a, KeyHash::of(&name("ab"), &key("c")));
    }
}
