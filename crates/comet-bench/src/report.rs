//! Latency figures: an HDR histogram in microseconds, merged across tasks,
//! printed as percentiles.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies recorded in microseconds, from 1 µs to 1 hour.
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Latencies {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        let _ = self.0.record(micros);
    }

    /// Adds another task's latencies.
    pub fn merge(&mut self, other: &Latencies) {
        let _ = self.0.add(&other.0);
    }

    /// Number of recorded latencies.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at `quantile` (0.0 to 1.0).
    pub fn at(&self, quantile: f64) -> Duration {
        Duration::from_micros(self.0.value_at_quantile(quantile))
    }

    /// The largest latency.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.0.max())
    }
}

impl fmt::Debug for Latencies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Latencies({} samples: {self})", self.count())
    }
}

impl fmt::Display for Latencies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:.2?}  p99 {:.2?}  p99.9 {:.2?}  max {:.2?}",
            self.at(0.5),
            self.at(0.99),
            self.at(0.999),
            self.max()
        )
    }
}
