//! Channel patterns: what a grant names.
//!
//! A pattern is a channel name (that channel only), a prefix ending in `*`
//! (`user.42.*`: every channel starting with `user.42.`), or `*` alone
//! (every channel). Channel names cannot contain `*`, so a pattern is never
//! ambiguous.

use std::fmt;

use comet_protocol::ChannelName;

/// A validated channel pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ChannelPattern {
    /// One channel.
    Exact(ChannelName),
    /// Every channel whose name starts with this (possibly empty: `*`).
    Prefix(String),
}

/// Why a pattern was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{pattern:?} is not a channel pattern: {reason}")]
pub struct InvalidPattern {
    /// The text given.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ChannelPattern {
    /// Validates a pattern.
    pub fn parse(text: &str) -> Result<Self, InvalidPattern> {
        let invalid = |reason: String| InvalidPattern {
            pattern: text.to_string(),
            reason,
        };
        if text.trim_end_matches('*').contains('*') || text.ends_with("**") {
            return Err(invalid("`*` may only end a pattern, once".into()));
        }
        match text.strip_suffix('*') {
            Some(prefix) => {
                if !prefix.is_empty() {
                    // Whatever follows the prefix, it must be able to start a
                    // valid name: the prefix is a valid name itself.
                    ChannelName::new(prefix).map_err(|error| invalid(error.to_string()))?;
                }
                Ok(Self::Prefix(prefix.to_string()))
            }
            None => ChannelName::new(text)
                .map(Self::Exact)
                .map_err(|error| invalid(error.to_string())),
        }
    }

    /// Parses a comma-separated list of patterns (at least one).
    pub fn parse_list(text: &str) -> Result<Vec<Self>, InvalidPattern> {
        let patterns: Vec<Self> = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(Self::parse)
            .collect::<Result<_, _>>()?;
        if patterns.is_empty() {
            return Err(InvalidPattern {
                pattern: text.to_string(),
                reason: "no pattern given".into(),
            });
        }
        Ok(patterns)
    }

    /// `*`: every channel.
    pub fn everything() -> Self {
        Self::Prefix(String::new())
    }

    /// True when the pattern names `channel`.
    pub fn matches(&self, channel: &ChannelName) -> bool {
        match self {
            Self::Exact(name) => name == channel,
            Self::Prefix(prefix) => channel.as_str().starts_with(prefix.as_str()),
        }
    }

    /// True for `*`.
    pub fn is_everything(&self) -> bool {
        matches!(self, Self::Prefix(prefix) if prefix.is_empty())
    }
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => write!(f, "{name}"),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// True when some pattern of `patterns` names `channel`.
pub fn any_matches(patterns: &[ChannelPattern], channel: &ChannelName) -> bool {
    patterns.iter().any(|pattern| pattern.matches(channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> ChannelName {
        ChannelName::new(text).unwrap()
    }

    #[test]
    fn patterns_name_exactly_what_they_say() {
        let exact = ChannelPattern::parse("news").unwrap();
        assert!(exact.matches(&name("news")));
        assert!(!exact.matches(&name("news2")));
        let prefix = ChannelPattern::parse("user.42.*").unwrap();
        assert!(prefix.matches(&name("user.42.inbox")));
        assert!(prefix.matches(&name("user.42.")));
        assert!(!prefix.matches(&name("user.420")));
        assert!(!prefix.matches(&name("user.4")));
        let all = ChannelPattern::parse("*").unwrap();
        assert!(all.is_everything());
        assert!(all.matches(&name("anything")));
        assert_eq!(prefix.to_string(), "user.42.*");
        assert_eq!(all.to_string(), "*");
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for bad in ["", "a b", "a*b", "**", "a/b*", "é"] {
            assert!(ChannelPattern::parse(bad).is_err(), "{bad:?}");
        }
        let error = ChannelPattern::parse("a*b").unwrap_err();
        assert!(error.to_string().contains("may only end"), "{error}");
        assert_eq!(
            ChannelPattern::parse_list("news, user.42.* ,")
                .unwrap()
                .len(),
            2
        );
        assert!(ChannelPattern::parse_list(" , ").is_err());
    }
}
