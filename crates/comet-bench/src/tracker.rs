//! Completeness of one receiver's sequence: every message exactly once and
//! in order. A number ahead of the expected one leaves a hole (counted
//! missing until it arrives, then out of order); a number already passed
//! that was not a hole is a duplicate.

use std::collections::BTreeSet;

/// One receiver's accounting.
#[derive(Debug, Default)]
pub struct Tracker {
    next: u64,
    holes: BTreeSet<u64>,
    /// Messages received.
    pub received: u64,
    /// Messages received twice or more.
    pub duplicated: u64,
    /// Messages received after a later one.
    pub out_of_order: u64,
}

impl Tracker {
    /// Records message number `n`.
    pub fn record(&mut self, n: u64) {
        self.received += 1;
        if n == self.next {
            self.next += 1;
        } else if n > self.next {
            // Bounded: a scenario's messages are numbered 0..count.
            self.holes.extend(self.next..n);
            self.next = n + 1;
        } else if self.holes.remove(&n) {
            self.out_of_order += 1;
        } else {
            self.duplicated += 1;
        }
    }

    /// Messages of `0..count` never received.
    pub fn missing(&self, count: u64) -> u64 {
        self.holes.len() as u64 + count.saturating_sub(self.next)
    }

    /// True when `0..count` all arrived.
    pub fn complete(&self, count: u64) -> bool {
        self.holes.is_empty() && self.next >= count
    }
}

/// Completeness over all receivers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completeness {
    /// Messages expected and never received.
    pub missing: u64,
    /// Messages received more than once.
    pub duplicated: u64,
    /// Messages received after a later one.
    pub out_of_order: u64,
}

impl Completeness {
    /// Over `trackers`, each of which expected `0..count`.
    pub fn of(trackers: &[Tracker], count: u64) -> Self {
        let mut completeness = Self::default();
        for tracker in trackers {
            completeness.add(tracker, count);
        }
        completeness
    }

    /// Adds a receiver that expected `0..count`.
    pub fn add(&mut self, tracker: &Tracker, count: u64) {
        self.missing += tracker.missing(count);
        self.duplicated += tracker.duplicated;
        self.out_of_order += tracker.out_of_order;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_holes_duplicates_and_late_arrivals() {
        let mut tracker = Tracker::default();
        for n in [0, 1, 3, 2, 3, 5] {
            tracker.record(n);
        }
        assert_eq!(tracker.out_of_order, 1, "2 came after 3");
        assert_eq!(tracker.duplicated, 1, "3 came twice");
        assert_eq!(tracker.missing(7), 2, "4 and 6 never came");
        assert!(!tracker.complete(7));
        let mut perfect = Tracker::default();
        for n in 0..5 {
            perfect.record(n);
        }
        assert!(perfect.complete(5));
        assert_eq!(perfect.missing(5), 0);
    }
}
