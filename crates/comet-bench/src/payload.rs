//! What the scenarios publish: a message's number and the time it was sent
//! (microseconds since the Unix epoch), padded to the wanted size, so every
//! receiver can check completeness and order and measure latency with the
//! same clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// `{n} {sent}` padded with `.` to `size` bytes.
pub fn encode(n: u64, size: usize) -> Vec<u8> {
    let mut payload = format!("{n} {}", now_micros()).into_bytes();
    if payload.len() < size {
        payload.resize(size, b'.');
    }
    payload
}

/// The number and the latency (now minus sent) of a payload.
pub fn decode(payload: &[u8]) -> Option<(u64, Duration)> {
    decode_received(payload, now_micros())
}

/// The number and the latency of a payload that arrived at `received`
/// (microseconds since the Unix epoch).
pub fn decode_received(payload: &[u8], received: u64) -> Option<(u64, Duration)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split(' ');
    let n = parts.next()?.parse().ok()?;
    let sent: u64 = parts.next()?.trim_end_matches('.').parse().ok()?;
    Some((n, Duration::from_micros(received.saturating_sub(sent))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let payload = encode(42, 64);
        assert_eq!(payload.len(), 64);
        let (n, latency) = decode(&payload).unwrap();
        assert_eq!(n, 42);
        assert!(latency < Duration::from_secs(5));
        assert!(decode(b"garbage").is_none());
    }
}
