//! API keys: long-lived secrets for publishers and back ends, read from a
//! file of one key a line.
//!
//! A line is `KEY` (every channel) or `KEY PATTERN[,PATTERN…]` (the
//! channels it may publish and subscribe to); blank lines and lines
//! starting with `#` are ignored. Only a SHA-256 digest of each key is
//! kept; a presented key is digested and looked up, and the digests
//! compared in constant time. Keys never appear in errors or logs: an error
//! names the file and line.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};

use crate::ConfigError;
use crate::grants::Grants;
use crate::pattern::ChannelPattern;

/// The shortest key accepted: shorter ones can be guessed.
pub const MIN_KEY_LEN: usize = 16;

/// A set of API keys and what each allows.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    by_digest: HashMap<[u8; 32], Arc<Grants>>,
}

fn sha256(key: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, key.as_bytes()).as_ref());
    out
}

impl ApiKeys {
    /// Reads a key file (see the module doc).
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::file(path, error))?;
        Self::parse(&text, path)
    }

    /// Parses the text of a key file named `path` (for errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut keys = Self::default();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let at = |reason: String| ConfigError::line(path, line_number, reason);
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, patterns) = match line.split_once(char::is_whitespace) {
                Some((key, rest)) => (key, Some(rest.trim())),
                None => (line, None),
            };
            if key.len() < MIN_KEY_LEN {
                return Err(at(format!(
                    "the key is too short to be safe (at least {MIN_KEY_LEN} characters)"
                )));
            }
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(at("a key is printable ASCII, without spaces".into()));
            }
            let patterns = match patterns {
                None => vec![ChannelPattern::everything()],
                Some(list) => {
                    ChannelPattern::parse_list(list).map_err(|error| at(error.to_string()))?
                }
            };
            if keys
                .by_digest
                .insert(sha256(key), Arc::new(Grants::both(patterns)))
                .is_some()
            {
                return Err(at("the same key is given twice".into()));
            }
        }
        Ok(keys)
    }

    /// What `key` allows, if it is one of these keys.
    pub fn grants(&self, key: &str) -> Option<&Arc<Grants>> {
        let presented = sha256(key);
        let (known, grants) = self.by_digest.get_key_value(&presented)?;
        verify_slices_are_equal(known, &presented).ok()?;
        Some(grants)
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comet_protocol::ChannelName;

    use crate::grants::Action;

    fn parse(text: &str) -> Result<ApiKeys, ConfigError> {
        ApiKeys::parse(text, Path::new("keys.txt"))
    }

    #[test]
    fn keys_grant_their_patterns_or_everything() {
        let keys =
            parse("# publishers\n\nall-channels-key-0001\nnews-only-key-00001 news, sport.*\n")
                .unwrap();
        assert_eq!(keys.len(), 2);
        let news = ChannelName::new("news").unwrap();
        let weather = ChannelName::new("weather").unwrap();
        let all = keys.grants("all-channels-key-0001").unwrap();
        assert!(all.allows(Action::Publish, &weather));
        let limited = keys.grants("news-only-key-00001").unwrap();
        assert!(limited.allows(Action::Publish, &news));
        assert!(limited.allows(Action::Subscribe, &ChannelName::new("sport.1").unwrap()));
        assert!(!limited.allows(Action::Subscribe, &weather));
        assert!(keys.grants("news-only-key-0000").is_none());
        assert!(keys.grants("").is_none());
    }

    #[test]
    fn a_bad_line_is_named_and_its_key_never_shown() {
        let error = parse("good-key-0000000001\nshort\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("keys.txt:2"), "{error}");
        assert!(error.contains("too short"), "{error}");
        assert!(!error.contains("short\n"), "{error}");
        let error = parse("good-key-0000000001 news,a b\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("keys.txt:1"), "{error}");
        assert!(!error.contains("good-key"), "{error}");
        let error = parse("same-key-00000000001\nsame-key-00000000001\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains(":2") && error.contains("twice"), "{error}");
    }
}
