//! Positions in a history: epochs, sequence numbers and cursors.
//!
//! Every message a store keeps gets the next number of one store-wide
//! sequence ([`Seq`]), so a single number orders the messages of every
//! channel, and a single number is a complete resume point for a
//! subscription to any set of channels: "everything of my channels with a
//! greater sequence number". That is why a [`Cursor`] for ten channels is as
//! short as a message id.
//!
//! Sequence numbers never come from a clock. They restart when a history is
//! wiped (a fresh in-memory store, a deleted data directory), so every history
//! has an [`Epoch`], a random tag chosen when it is created. A cursor carries
//! its epoch, and a cursor from another epoch is recognised as such instead of
//! being misread as a position in the current history.
//!
//! Text forms (the contract says ids are opaque; these are implementation
//! choices, stable within version 1):
//! - a [`Cursor`] is `{epoch}-{seq}`, for example `k3x9q2mf-1042`;
//! - a message's id, [`MessageId`], is its cursor followed by `/` and its
//!   channel, for example `k3x9q2mf-1042/news`. Naming the channel lets a
//!   client of a multi-channel SSE stream (whose frames carry only `id`,
//!   `event` and `data`) tell which channel each message belongs to, with
//!   the browser's own `EventSource` too. A message id is a cursor: parsing
//!   it yields its position, and the channel part is only checked.

use std::fmt;
use std::sync::Arc;

use crate::ChannelName;

/// A position in the store-wide order of messages. `Seq(0)` is "before the
/// first message"; the first message stored in an epoch is `Seq(1)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(pub u64);

impl Seq {
    /// Before every message of an epoch.
    pub const ZERO: Seq = Seq(0);

    /// The following position; `None` when the sequence is exhausted
    /// (a store refuses to append rather than reuse a number).
    pub fn checked_next(self) -> Option<Seq> {
        self.0.checked_add(1).map(Seq)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The longest epoch tag accepted, in characters.
pub const MAX_EPOCH_LEN: usize = 16;

/// The tag of one history. Lowercase ASCII letters and digits, 1 to 16 of them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Epoch(Arc<str>);

/// Why an epoch tag was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an epoch is 1 to {MAX_EPOCH_LEN} characters of a-z and 0-9")]
pub struct InvalidEpoch;

impl Epoch {
    /// Validates an epoch tag.
    pub fn new(tag: &str) -> Result<Self, InvalidEpoch> {
        let valid = !tag.is_empty()
            && tag.len() <= MAX_EPOCH_LEN
            && tag
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        if valid {
            Ok(Self(Arc::from(tag)))
        } else {
            Err(InvalidEpoch)
        }
    }

    /// An 8-character tag made from random bits (41 of them are used). The
    /// caller supplies the randomness, so this crate stays deterministic.
    pub fn from_random(bits: u64) -> Self {
        const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut value = bits;
        let mut tag = String::with_capacity(8);
        for _ in 0..8 {
            tag.push(DIGITS[(value % 36) as usize] as char);
            value /= 36;
        }
        Self(Arc::from(tag))
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// A resume point: "after `seq` in the history tagged `epoch`". Message ids
/// are cursors too: resuming from a message's id yields what came after it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// The history the position belongs to.
    pub epoch: Epoch,
    /// The position in that history.
    pub seq: Seq,
}

/// Why a cursor (a `since`, `lastEventId` or `Last-Event-ID`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a Comet id: expected an id previously received from this server, such as \"k3x9q2mf-1042\""
)]
pub struct InvalidCursor(pub String);

impl Cursor {
    /// A cursor at `seq` of `epoch`.
    pub fn new(epoch: Epoch, seq: Seq) -> Self {
        Self { epoch, seq }
    }

    /// Parses `{epoch}-{seq}`, or a message id `{epoch}-{seq}/{channel}`
    /// (whose channel is checked, then set aside: the position is the same).
    pub fn parse(text: &str) -> Result<Self, InvalidCursor> {
        let invalid = || InvalidCursor(text.chars().take(300).collect());
        let position = match text.split_once('/') {
            Some((position, channel)) => {
                ChannelName::new(channel).map_err(|_| invalid())?;
                position
            }
            None => text,
        };
        let (epoch, seq) = position.split_once('-').ok_or_else(invalid)?;
        let epoch = Epoch::new(epoch).map_err(|_| invalid())?;
        // Canonical decimal only: no sign, no leading zeros, no overflow.
        let canonical = !seq.is_empty()
            && seq.bytes().all(|b| b.is_ascii_digit())
            && (seq == "0" || !seq.starts_with('0'));
        if !canonical {
            return Err(invalid());
        }
        let seq = seq.parse::<u64>().map_err(|_| invalid())?;
        Ok(Self::new(epoch, Seq(seq)))
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({self})")
    }
}

/// A message's id: its position and its channel, `{epoch}-{seq}/{channel}`.
/// At most 16 + 1 + 20 + 1 + 200 = 238 bytes of printable ASCII.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// Where the message is in the store-wide order.
    pub position: Cursor,
    /// Its channel.
    pub channel: ChannelName,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.position, self.channel)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl std::str::FromStr for Cursor {
    type Err = InvalidCursor;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let cursor = Cursor::new(Epoch::new("k3x9q2mf").unwrap(), Seq(1042));
        assert_eq!(cursor.to_string(), "k3x9q2mf-1042");
        assert_eq!(Cursor::parse("k3x9q2mf-1042").unwrap(), cursor);
        let max = Cursor::new(Epoch::new("z").unwrap(), Seq(u64::MAX));
        assert_eq!(Cursor::parse(&max.to_string()).unwrap(), max);
    }

    #[test]
    fn cursors_refuse_everything_else() {
        for bad in [
            "",
            "-",
            "abc",
            "abc-",
            "-12",
            "ABC-12",
            "abc-012",
            "abc-+12",
            "abc--12",
            "abc-1-2",
            "abc-18446744073709551616",
            "abc-12 ",
            "abcdefghijklmnopq-1",
            "ab_c-1",
            "abc-1/",
            "abc-1/a b",
            "abc-1/a/b",
            "/news",
        ] {
            assert!(Cursor::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Cursor::parse("abc-0").is_ok());
    }

    #[test]
    fn message_ids_name_their_channel_and_parse_as_their_position() {
        let id = MessageId {
            position: Cursor::new(Epoch::new("k3x9q2mf").unwrap(), Seq(7)),
            channel: ChannelName::new("a.b:c@d~e").unwrap(),
        };
        assert_eq!(id.to_string(), "k3x9q2mf-7/a.b:c@d~e");
        assert_eq!(Cursor::parse(&id.to_string()).unwrap(), id.position);
        let longest = MessageId {
            position: Cursor::new(Epoch::new(&"z".repeat(16)).unwrap(), Seq(u64::MAX)),
            channel: ChannelName::new(&"c".repeat(200)).unwrap(),
        };
        assert!(longest.to_string().len() <= 256);
    }

    #[test]
    fn random_epochs_are_valid_and_differ() {
        let a = Epoch::from_random(0x1234_5678_9abc_def0);
        let b = Epoch::from_random(0x1234_5678_9abc_def1);
        assert_eq!(a.as_str().len(), 8);
        assert!(Epoch::new(a.as_str()).is_ok());
        assert_ne!(a, b);
    }
}
