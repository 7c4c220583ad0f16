//! When to try again: the reconnection time of the standard, doubled after
//! each failed attempt up to a ceiling, with jitter so that clients dropped
//! together do not all come back at the same instant.

use std::time::Duration;

/// Reconnection and time-out settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconnect {
    /// The reconnection time until a server sets one with `retry:`.
    pub initial: Duration,
    /// The longest wait between attempts when the server keeps failing.
    pub max: Duration,
    /// How long to wait for an answer's status and headers.
    pub open_timeout: Duration,
    /// A stream silent for this long is considered dead and reopened
    /// (`None`: wait forever, as the standard does).
    pub idle_timeout: Option<Duration>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(3),
            max: Duration::from_secs(30),
            open_timeout: Duration::from_secs(30),
            idle_timeout: None,
        }
    }
}

impl Reconnect {
    /// The wait before the next attempt: the reconnection time after a
    /// connection that worked, doubled per consecutive failure up to `max`
    /// (never below the reconnection time), plus up to 50 % jitter. Never
    /// less than the reconnection time, as the standard requires.
    pub fn delay(&self, reconnection_time: Duration, failures: u32) -> Duration {
        let doubled = reconnection_time.saturating_mul(1 << failures.min(16));
        let base = doubled.min(self.max.max(reconnection_time));
        base + base.mul_f64(rand::random::<f64>() * 0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_honour_the_reconnection_time_back_off_and_jitter() {
        let policy = Reconnect {
            max: Duration::from_secs(10),
            ..Reconnect::default()
        };
        let second = Duration::from_secs(1);
        for _ in 0..200 {
            let first = policy.delay(second, 0);
            assert!(first >= second && first <= second.mul_f64(1.5), "{first:?}");
            let third = policy.delay(second, 2);
            assert!(third >= 4 * second && third <= 6 * second, "{third:?}");
            let capped = policy.delay(second, 30);
            assert!(capped >= 10 * second && capped <= 15 * second, "{capped:?}");
            // A server asking for more than the ceiling gets what it asks.
            let long = policy.delay(60 * second, 3);
            assert!(long >= 60 * second, "{long:?}");
        }
        let spread: std::collections::HashSet<Duration> =
            (0..20).map(|_| policy.delay(second, 0)).collect();
        assert!(spread.len() > 10, "jitter spreads the delays");
    }
}
