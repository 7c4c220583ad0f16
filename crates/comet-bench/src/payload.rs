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

/// The number and the latency of a payload that arrived at `received`
/// (microseconds since the Unix epoch).
pub fn decode_received(payload: &[u8], received: u64) -> Option<(u64, Duration)> {
    let (n, rest) = leading_number(payload)?;
    let (sent, rest) = leading_number(rest.strip_prefix(b" ")?)?;
    if !matches!(rest.first(), None | Some(b'.')) {
        return None;
    }
    Some((n, Duration::from_micros(received.saturating_sub(sent))))
}

/// The decimal number `bytes` start with (at least one digit, no sign),
/// and what follows it.
fn leading_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    if digits == 0 {
        return None;
    }
    let mut number: u64 = 0;
    for &digit in &bytes[..digits] {
        number = number
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    Some((number, &bytes[digits..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let payload = encode(42, 64);
        assert_eq!(payload.len(), 64);
        let (n, latency) = decode_received(&payload, now_micros()).unwrap();
        assert_eq!(n, 42);
        assert!(latency < Duration::from_secs(5));
        assert!(decode_received(b"garbage", now_micros()).is_none());
    }

    #[test]
    fn only_a_number_a_space_a_time_and_padding_decode() {
        let at = |payload: &[u8]| {
            decode_received(payload, 1_000).map(|(n, latency)| (n, latency.as_micros()))
        };
        assert_eq!(at(b"7 400"), Some((7, 600)));
        assert_eq!(at(b"7 400...."), Some((7, 600)));
        assert_eq!(at(b"7 4000"), Some((7, 0)));
        for garbage in [
            &b""[..],
            b"7",
            b"7 ",
            b" 7 400",
            b"7  400",
            b"7 400x",
            b"x 400",
            b"99999999999999999999 400",
        ] {
            assert_eq!(at(garbage), None, "{:?}", String::from_utf8_lossy(garbage));
        }
    }
}
