//! Idempotency keys: what a publisher sends (`Idempotency-Key`, or a batch
//! item's `idempotency_key`) so that a retried publish is stored once.
//!
//! The contract allows 1 to 255 bytes of printable ASCII (0x21 to 0x7E, as
//! for ids). A key is scoped to its channel: the same key on two channels
//! names two publishes.

use std::fmt;
use std::sync::Arc;

/// The longest idempotency key the contract allows, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A validated idempotency key. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(Arc<str>);

/// Why an idempotency key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIdempotencyKey {
    /// Empty.
    #[error("the idempotency key is empty")]
    Empty,
    /// Longer than [`MAX_IDEMPOTENCY_KEY_LEN`].
    #[error("the idempotency key is {0} bytes long; the limit is {MAX_IDEMPOTENCY_KEY_LEN}")]
    TooLong(usize),
    /// Holds a byte outside printable ASCII.
    #[error("the idempotency key may hold only printable ASCII (0x21 to 0x7E)")]
    NotPrintable,
}

impl IdempotencyKey {
    /// Validates a key.
    pub fn new(value: &str) -> Result<Self, InvalidIdempotencyKey> {
        Self::from_bytes(value.as_bytes())
    }

    /// Validates a key given as bytes (a header value).
    pub fn from_bytes(value: &[u8]) -> Result<Self, InvalidIdempotencyKey> {
        if value.is_empty() {
            return Err(InvalidIdempotencyKey::Empty);
        }
        if value.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(InvalidIdempotencyKey::TooLong(value.len()));
        }
        if !value.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(InvalidIdempotencyKey::NotPrintable);
        }
        let text = std::str::from_utf8(value).expect("printable ASCII is UTF-8");
        Ok(Self(Arc::from(text)))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_255_printable_ascii_bytes() {
        assert_eq!(IdempotencyKey::new("a").unwrap().as_str(), "a");
        let longest = "~".repeat(MAX_IDEMPOTENCY_KEY_LEN);
        assert_eq!(IdempotencyKey::new(&longest).unwrap().as_str(), longest);
        assert!(IdempotencyKey::new("order-42:retry/1!").is_ok());
        assert_eq!(IdempotencyKey::new(""), Err(InvalidIdempotencyKey::Empty));
        assert_eq!(
            IdempotencyKey::new(&"k".repeat(256)),
            Err(InvalidIdempotencyKey::TooLong(256))
        );
        for bad in ["a b", "tab\t", "é", "nul\0", "del\x7f"] {
            assert_eq!(
                IdempotencyKey::new(bad),
                Err(InvalidIdempotencyKey::NotPrintable),
                "{bad:?}"
            );
        }
    }
}
