//! Warnings that can repeat thousands of times a second (refusals while the
//! server is full) are written at most once per interval, saying how many
//! were left out, so the log tells an operator what happens without
//! drowning everything else.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One kind of repeated warning.
pub(crate) struct Throttled {
    interval: Duration,
    /// When it was last written, and how many occurrences since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttled {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one occurrence; writes it with `write(left_out)` (the
    /// occurrences not written since the last one) unless one was written
    /// within the interval.
    pub(crate) fn warn(&self, write: impl FnOnce(u64)) {
        let left_out = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let due = state
                .0
                .is_none_or(|last| now.duration_since(last) >= self.interval);
            if !due {
                state.1 += 1;
                return;
            }
            *state = (Some(now), 0);
            state.1
        };
        write(left_out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_per_interval_and_counts_the_rest() {
        let throttled = Throttled::new(Duration::from_secs(3600));
        let mut written = Vec::new();
        for _ in 0..5 {
            throttled.warn(|left_out| written.push(left_out));
        }
        assert_eq!(written, [0]);
        let throttled = Throttled::new(Duration::ZERO);
        let mut written = Vec::new();
        for _ in 0..3 {
            throttled.warn(|left_out| written.push(left_out));
        }
        assert_eq!(written, [0, 0, 0]);
    }
}
