//! Publish back-pressure: a publish to a channel is stored at once, and its
//! answer waits while one of the channel's live subscribers has more than
//! [`PaceConfig::max_lag`] of its messages unread (this one included), at
//! most [`PaceConfig::max_wait`]: once answered, none has more.
//!
//! Without it, a publisher that never waits (the memory store answers at
//! once) can run arbitrarily far ahead of the sockets: every message is
//! delivered, but the last ones seconds after they were published. With
//! it, publishes go at the pace of the slowest live subscriber, so a
//! message's delay stays within about `max_lag` messages' fan-out (plus
//! one for each other publish to the channel in flight).
//!
//! The wait comes after the message is stored, not before: a message held
//! back before it is stored is out of every subscriber's reach for as long
//! as the slowest one takes, and reaches them only in the fan-out after
//! that, so under a flood its delay was about two fan-outs instead of one
//! (see `bench/README.md`, "Publish back-pressure").
//!
//! Who counts: a subscription whose last read of every channel came from
//! the live windows ([`Progress`]). One reading stored history (it fell
//! behind the window, or resumed from long ago) does not hold publishers
//! back; nor does one a publish already waited `max_wait` for: it is
//! *slow* until it has read everything announced, so a stuck client costs
//! at most one wait, not one per publish.
//!
//! Cost: each read of a subscription stores its position; a publish looks
//! at the window and a lower bound of its followers' positions, and only
//! when that bound is too far behind scans them. A waiting publish is woken
//! when the last of the subscribers it waits for crosses its threshold (a
//! count they decrement), or every [`RESCAN_EVERY`] in case a count was
//! missed in a race.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use comet_protocol::Seq;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::feed::ChannelEntry;
use crate::stats::HubStats;

/// How often a waiting publish looks again without being woken.
const RESCAN_EVERY: Duration = Duration::from_millis(5);

/// How far publishers may run ahead of subscribers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaceConfig {
    /// A publish's answer waits while a live subscriber of its channel has
    /// more than this many of its messages unread (the publish's own
    /// included: it is stored first); 0 never waits.
    pub max_lag: usize,
    /// Longest one publish waits; a subscriber still behind after it no
    /// longer counts until it has caught up.
    pub max_wait: Duration,
}

impl Default for PaceConfig {
    fn default() -> Self {
        Self {
            max_lag: 16,
            max_wait: Duration::from_millis(100),
        }
    }
}

/// How far one subscription has read, shared with its channels.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Everything up to here was read.
    position: AtomicU64,
    /// Its last read came from the live windows and it is not slow.
    counted: AtomicBool,
    /// A publish gave up waiting for it; cleared once it has read
    /// everything announced.
    slow: AtomicBool,
}

impl Progress {
    pub(crate) fn new(position: Seq) -> Self {
        Self {
            position: AtomicU64::new(position.0),
            counted: AtomicBool::new(false),
            slow: AtomicBool::new(false),
        }
    }

    /// Records a read up to `position`: `live` if every channel was read
    /// from its window, `caught_up` if it reached the watermark. Tells
    /// waiting publishes of `entries` when it crossed their threshold.
    pub(crate) fn advance(
        &self,
        entries: &[Arc<ChannelEntry>],
        position: Seq,
        live: bool,
        caught_up: bool,
    ) {
        let before = self.position.swap(position.0, Ordering::SeqCst);
        if caught_up && self.slow.load(Ordering::Relaxed) {
            self.slow.store(false, Ordering::Relaxed);
        }
        let counted = live && !self.slow.load(Ordering::Relaxed);
        let was_counted = self.counted.swap(counted, Ordering::SeqCst);
        for entry in entries {
            let pace = &entry.pace;
            if counted && !was_counted {
                // It counts again: the bound the publishers trust must not
                // be above it.
                pace.slowest_known.fetch_min(position.0, Ordering::SeqCst);
            }
            let threshold = pace.threshold.load(Ordering::SeqCst);
            if threshold != 0
                && before < threshold
                && position.0 >= threshold
                && pace.lagging.fetch_sub(1, Ordering::SeqCst) == 1
            {
                pace.crossed.notify_waiters();
            }
        }
    }
}

/// A channel's followers and the publish waiting for them.
#[derive(Default)]
pub(crate) struct ChannelPace {
    followers: Mutex<HashMap<usize, Arc<Progress>>>,
    /// No counted follower was below this at the last look (positions
    /// only grow; a follower counted again lowers it).
    slowest_known: AtomicU64,
    /// The position a waiting publish needs everyone at (0: none waits).
    threshold: AtomicU64,
    /// Followers the waiting publish still waits for (may run early to
    /// zero in a race; the publish then looks again).
    lagging: AtomicI64,
    crossed: Notify,
    /// One waiting publish per channel at a time.
    gate: tokio::sync::Mutex<()>,
}

impl ChannelPace {
    pub(crate) fn follow(&self, progress: &Arc<Progress>) {
        self.followers()
            .insert(Arc::as_ptr(progress) as usize, progress.clone());
    }

    pub(crate) fn unfollow(&self, progress: &Arc<Progress>) {
        self.followers().remove(&(Arc::as_ptr(progress) as usize));
    }

    fn followers(&self) -> MutexGuard<'_, HashMap<usize, Arc<Progress>>> {
        self.followers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True if a publish to `entry` need not wait: no follower can be more
    /// than `config.max_lag` behind. False means it may have to; only
    /// [`wait`](Self::wait) finds out.
    pub(crate) fn holds_nobody(&self, entry: &ChannelEntry, config: PaceConfig) -> bool {
        match threshold(entry, config.max_lag) {
            None => true,
            Some(first) => self.slowest_known.load(Ordering::SeqCst) >= first.0,
        }
    }

    /// Waits until every counted follower of `entry` has at most
    /// `config.max_lag` of its messages unread (the publish's own
    /// included: it is stored first), at most `config.max_wait`;
    /// then gives up on those still behind. True if it waited at all.
    pub(crate) async fn wait(
        &self,
        entry: &ChannelEntry,
        config: PaceConfig,
        stats: &HubStats,
    ) -> bool {
        if self.holds_nobody(entry, config) {
            return false;
        }
        let _gate = self.gate.lock().await;
        let deadline = Instant::now() + config.max_wait;
        let mut waited = false;
        while let Some(threshold) = threshold(entry, config.max_lag) {
            let crossed = self.crossed.notified();
            tokio::pin!(crossed);
            crossed.as_mut().enable();
            self.threshold.store(threshold.0, Ordering::SeqCst);
            let lagging = self.scan(threshold);
            if lagging.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for progress in &lagging {
                    progress.slow.store(true, Ordering::Relaxed);
                    progress.counted.store(false, Ordering::SeqCst);
                }
                stats.record_gave_up_waiting(lagging.len() as u64);
                break;
            }
            waited = true;
            let left = self
                .lagging
                .fetch_add(lagging.len() as i64, Ordering::SeqCst)
                + lagging.len() as i64;
            if left > 0 {
                let wake = deadline.min(Instant::now() + RESCAN_EVERY);
                let _ = tokio::time::timeout_at(wake, crossed).await;
            }
            self.lagging.store(0, Ordering::SeqCst);
        }
        self.threshold.store(0, Ordering::SeqCst);
        waited
    }

    /// The counted followers below `threshold`; refreshes the lower bound.
    fn scan(&self, threshold: Seq) -> Vec<Arc<Progress>> {
        let followers = self.followers();
        let mut lagging = Vec::new();
        let mut slowest = u64::MAX;
        for progress in followers.values() {
            if !progress.counted.load(Ordering::SeqCst) {
                continue;
            }
            let position = progress.position.load(Ordering::SeqCst);
            slowest = slowest.min(position);
            if position < threshold.0 {
                lagging.push(progress.clone());
            }
        }
        self.slowest_known.store(slowest, Ordering::SeqCst);
        lagging
    }
}

/// The seq of the channel's `max_lag + 1`-th newest message (the publish
/// that waits is in the window already): a follower below it has more than
/// `max_lag` unread. None when the window holds fewer.
fn threshold(entry: &ChannelEntry, max_lag: usize) -> Option<Seq> {
    if max_lag == 0 {
        return None;
    }
    let window = entry.window();
    let count = window.messages.len();
    (count > max_lag).then(|| window.messages[count - max_lag - 1].seq())
}
