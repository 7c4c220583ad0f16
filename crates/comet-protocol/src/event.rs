//! Event types: the SSE `event:` field of a message.
//!
//! The contract allows 1 to 64 bytes without CR, LF or NUL. Comet reserves
//! the prefix [`RESERVED_EVENT_PREFIX`] for its own signals (the gap event),
//! so a publisher can never forge one, and the types the browser's
//! `EventSource` treats as its own ([`BROWSER_EVENT_TYPES`]: a message of
//! type `error` reaches `onerror`, as if the connection had failed). That
//! check is [`EventType::is_reserved`], applied where publishes arrive.

use std::fmt;
use std::sync::{Arc, OnceLock};

/// The longest event type the contract allows, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 64;

/// Event types starting with this are Comet's own and cannot be published.
pub const RESERVED_EVENT_PREFIX: &str = "comet-";

/// Event types the browser's `EventSource` dispatches to its own `onerror`
/// and `onopen` handlers: a message of one of these types would pass for a
/// connection event, so they cannot be published.
pub const BROWSER_EVENT_TYPES: [&str; 2] = ["error", "open"];

/// A validated event type. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventType(Arc<str>);

/// Why an event type was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEventType {
    /// Empty.
    #[error("event type is empty")]
    Empty,
    /// Longer than [`MAX_EVENT_TYPE_LEN`].
    #[error("event type is {0} bytes long; the limit is {MAX_EVENT_TYPE_LEN}")]
    TooLong(usize),
    /// Holds CR, LF or NUL, which would break the SSE framing.
    #[error("event type contains CR, LF or NUL")]
    ControlCharacter,
}

impl EventType {
    /// Validates an event type.
    pub fn new(value: &str) -> Result<Self, InvalidEventType> {
        if value.is_empty() {
            return Err(InvalidEventType::Empty);
        }
        if value.len() > MAX_EVENT_TYPE_LEN {
            return Err(InvalidEventType::TooLong(value.len()));
        }
        if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(InvalidEventType::ControlCharacter);
        }
        Ok(Self(Arc::from(value)))
    }

    /// The default type, `message`: the one SSE leaves unnamed. Shared:
    /// no allocation per message.
    pub fn message() -> Self {
        static MESSAGE: OnceLock<Arc<str>> = OnceLock::new();
        Self(MESSAGE.get_or_init(|| Arc::from("message")).clone())
    }

    /// True for `message`, which SSE sends without an `event:` line.
    pub fn is_default(&self) -> bool {
        &*self.0 == "message"
    }

    /// True when the type is in Comet's reserved namespace or is one the
    /// browser treats as its own ([`BROWSER_EVENT_TYPES`]).
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(RESERVED_EVENT_PREFIX) || BROWSER_EVENT_TYPES.contains(&&*self.0)
    }

    /// The type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for EventType {
    fn default() -> Self {
        Self::message()
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_event_types() {
        assert!(EventType::new("update").is_ok());
        assert!(EventType::new("with space and ünïcode").is_ok());
        assert!(EventType::new(&"x".repeat(64)).is_ok());
        assert_eq!(EventType::new(""), Err(InvalidEventType::Empty));
        assert_eq!(
            EventType::new(&"x".repeat(65)),
            Err(InvalidEventType::TooLong(65))
        );
        for bad in ["a\nb", "a\rb", "a\0b"] {
            assert_eq!(EventType::new(bad), Err(InvalidEventType::ControlCharacter));
        }
    }

    #[test]
    fn knows_the_default_and_the_reserved() {
        assert!(EventType::message().is_default());
        assert!(!EventType::new("messages").unwrap().is_default());
        assert!(EventType::new("comet-gap").unwrap().is_reserved());
        assert!(!EventType::new("comet").unwrap().is_reserved());
        assert!(EventType::new("error").unwrap().is_reserved());
        assert!(EventType::new("open").unwrap().is_reserved());
        assert!(!EventType::new("errors").unwrap().is_reserved());
        assert!(!EventType::new("Error").unwrap().is_reserved());
    }
}
