//! Human units on the command line: durations (`250ms`, `15s`, `30m`, `24h`,
//! `7d`, or plain seconds) and byte sizes (`64KiB`, `1MiB`, `1GiB`, `1kB`,
//! or plain bytes).

use std::str::FromStr;
use std::time::Duration;

/// A duration given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (number, unit) = split_unit(text);
        let value: f64 = number
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("{text:?} is not a duration (try 500ms, 15s, 30m, 24h, 7d)"))?;
        let seconds = match unit {
            "ms" => value / 1000.0,
            "" | "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86_400.0,
            other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
        };
        if seconds > MAX_SECONDS {
            return Err(format!("{text:?} is too long (at most 100 years)"));
        }
        Ok(Seconds(Duration::from_secs_f64(seconds)))
    }
}

/// The longest duration accepted: longer ones are typing mistakes, and
/// adding them to a clock reading could overflow.
const MAX_SECONDS: f64 = 100.0 * 365.0 * 86_400.0;

/// A size in bytes given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (number, unit) = split_unit(text);
        let value: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size (try 1MiB, 64KiB, 1000)"))?;
        let factor: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1000,
            "kib" | "k" => 1024,
            "mb" => 1_000_000,
            "mib" | "m" => 1024 * 1024,
            "gb" => 1_000_000_000,
            "gib" | "g" => 1024 * 1024 * 1024,
            other => return Err(format!("unknown size unit {other:?} in {text:?}")),
        };
        value
            .checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

fn split_unit(text: &str) -> (&str, &str) {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    (&text[..split], text[split..].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!("15s".parse::<Seconds>().unwrap().0, Duration::from_secs(15));
        assert_eq!(
            "250ms".parse::<Seconds>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!("2m".parse::<Seconds>().unwrap().0, Duration::from_secs(120));
        assert_eq!("0".parse::<Seconds>().unwrap().0, Duration::ZERO);
        assert!("-1s".parse::<Seconds>().is_err());
        assert!("1y".parse::<Seconds>().is_err());
        assert!("s".parse::<Seconds>().is_err());
        // Absurd values are refused, not a panic.
        assert!("1e308s".parse::<Seconds>().is_err());
        assert!(
            "99999999999999999999999999999999999999999999999d"
                .parse::<Seconds>()
                .is_err()
        );
        assert!("101y".parse::<Seconds>().is_err());
    }

    #[test]
    fn parses_sizes() {
        assert_eq!("1MiB".parse::<ByteSize>().unwrap().0, 1 << 20);
        assert_eq!("64KiB".parse::<ByteSize>().unwrap().0, 64 << 10);
        assert_eq!("1000".parse::<ByteSize>().unwrap().0, 1000);
        assert!("1.5MiB".parse::<ByteSize>().is_err());
        assert!("1PiB".parse::<ByteSize>().is_err());
    }
}
