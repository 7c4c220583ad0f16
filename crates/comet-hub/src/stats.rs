//! Counters the hub keeps for metrics: plain atomics, read at scrape time,
//! so the hub needs no metrics library and pays one relaxed add per event.

use std::sync::atomic::{AtomicU64, Ordering};

use comet_protocol::GapReason;

/// Live counters. Shared by the hub and its subscriptions.
#[derive(Debug, Default)]
pub struct HubStats {
    published: AtomicU64,
    repeats: AtomicU64,
    gaps_trimmed: AtomicU64,
    gaps_reset: AtomicU64,
    fell_behind: AtomicU64,
    paced: AtomicU64,
    gave_up_waiting: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Messages stored through this hub.
    pub published: u64,
    /// Publishes answered as repeats of an earlier one (same idempotency
    /// key and content): nothing stored.
    pub repeats: u64,
    /// Gap signals because retention removed unread messages.
    pub gaps_trimmed: u64,
    /// Gap signals because a cursor came from another history.
    pub gaps_reset: u64,
    /// Times a live subscriber fell behind the live window and continued
    /// from stored history (the slow-consumer fate).
    pub fell_behind: u64,
    /// Publishes that waited for live subscribers to catch up (publish
    /// back-pressure).
    pub paced: u64,
    /// Subscribers a publish stopped waiting for (it waited the longest
    /// it may): they do not hold publishes back until they catch up.
    pub gave_up_waiting: u64,
}

impl HubStats {
    pub(crate) fn record_published(&self, stored: u64, repeats: u64) {
        if stored > 0 {
            self.published.fetch_add(stored, Ordering::Relaxed);
        }
        if repeats > 0 {
            self.repeats.fetch_add(repeats, Ordering::Relaxed);
        }
    }

    pub(crate) fn record_gap(&self, reason: GapReason) {
        let counter = match reason {
            GapReason::Trimmed => &self.gaps_trimmed,
            GapReason::Reset => &self.gaps_reset,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_fell_behind(&self) {
        self.fell_behind.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_paced(&self) {
        self.paced.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_gave_up_waiting(&self, subscribers: u64) {
        self.gave_up_waiting
            .fetch_add(subscribers, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            published: self.published.load(Ordering::Relaxed),
            repeats: self.repeats.load(Ordering::Relaxed),
            gaps_trimmed: self.gaps_trimmed.load(Ordering::Relaxed),
            gaps_reset: self.gaps_reset.load(Ordering::Relaxed),
            fell_behind: self.fell_behind.load(Ordering::Relaxed),
            paced: self.paced.load(Ordering::Relaxed),
            gave_up_waiting: self.gave_up_waiting.load(Ordering::Relaxed),
        }
    }
}
