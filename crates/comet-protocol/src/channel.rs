//! Channel names and the channel lists a subscription names.
//!
//! A name is 1 to 200 bytes of `A-Z a-z 0-9 _ - . : @ ~` (the API contract).
//! The alphabet needs no escaping in a URL path, a JSON string, an SSE field
//! or a Redis key, which is why it is this narrow.

use std::fmt;
use std::sync::Arc;

/// The longest channel name the contract allows, in bytes.
pub const MAX_CHANNEL_NAME_LEN: usize = 200;

/// A validated channel name. Cheap to clone (shared).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidChannel {
    /// The name is empty.
    #[error("channel name is empty")]
    Empty,
    /// The name is longer than [`MAX_CHANNEL_NAME_LEN`] bytes.
    #[error("channel name is {0} bytes long; the limit is {MAX_CHANNEL_NAME_LEN}")]
    TooLong(usize),
    /// The name holds a byte outside the allowed alphabet.
    #[error("channel name contains {0}, which is not allowed (use A-Z a-z 0-9 and _ - . : @ ~)")]
    BadCharacter(String),
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@' | b'~')
}

impl ChannelName {
    /// Validates `name` against the contract's alphabet and length.
    pub fn new(name: &str) -> Result<Self, InvalidChannel> {
        if name.is_empty() {
            return Err(InvalidChannel::Empty);
        }
        if name.len() > MAX_CHANNEL_NAME_LEN {
            return Err(InvalidChannel::TooLong(name.len()));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !c.is_ascii() || !is_name_byte(*c as u8))
        {
            return Err(InvalidChannel::BadCharacter(format!("{bad:?}")));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::str::FromStr for ChannelName {
    type Err = InvalidChannel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// The channels of one subscription: at least one, sorted, without duplicates.
///
/// Sorting makes `news,sport` and `sport,news` the same subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelList(Vec<ChannelName>);

/// Why a comma-separated channel list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidChannelList {
    /// One element of the list is not a valid name (an empty element included).
    #[error("channel {position} of the list: {reason}")]
    Channel {
        /// 1-based position in the list as written.
        position: usize,
        /// What is wrong with it.
        reason: InvalidChannel,
    },
    /// More distinct channels than the configured limit.
    #[error("{count} channels in one subscription; the limit is {limit}")]
    TooMany {
        /// Distinct channels named.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
}

impl ChannelList {
    /// Parses `news,sport`, refusing empty elements and more than `limit`
    /// distinct channels. Duplicates are merged.
    pub fn parse(list: &str, limit: usize) -> Result<Self, InvalidChannelList> {
        let mut names = Vec::new();
        for (index, part) in list.split(',').enumerate() {
            let name = ChannelName::new(part).map_err(|reason| InvalidChannelList::Channel {
                position: index + 1,
                reason,
            })?;
            names.push(name);
        }
        names.sort();
        names.dedup();
        if names.len() > limit {
            return Err(InvalidChannelList::TooMany {
                count: names.len(),
                limit,
            });
        }
        Ok(Self(names))
    }

    /// A list of exactly one channel.
    pub fn single(name: ChannelName) -> Self {
        Self(vec![name])
    }

    /// The channels, sorted.
    pub fn names(&self) -> &[ChannelName] {
        &self.0
    }

    /// How many distinct channels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a list holds at least one channel.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ChannelList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(name.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_whole_alphabet() {
        let all = "AZaz09_-.:@~";
        assert_eq!(ChannelName::new(all).unwrap().as_str(), all);
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(ChannelName::new(""), Err(InvalidChannel::Empty));
        assert_eq!(
            ChannelName::new(&"a".repeat(201)),
            Err(InvalidChannel::TooLong(201))
        );
        assert!(ChannelName::new(&"a".repeat(200)).is_ok());
        for bad in ["a b", "a/b", "a,b", "é", "a\0", "a%20", "a?b", "a#b", "a+b"] {
            assert!(
                matches!(ChannelName::new(bad), Err(InvalidChannel::BadCharacter(_))),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn lists_are_sorted_and_deduplicated() {
        let list = ChannelList::parse("sport,news,sport", 8).unwrap();
        assert_eq!(list.to_string(), "news,sport");
    }

    #[test]
    fn lists_refuse_empty_elements_and_excess() {
        assert!(matches!(
            ChannelList::parse("news,,sport", 8),
            Err(InvalidChannelList::Channel { position: 2, .. })
        ));
        assert!(matches!(
            ChannelList::parse("news,", 8),
            Err(InvalidChannelList::Channel { position: 2, .. })
        ));
        assert!(matches!(
            ChannelList::parse("a,b,c", 2),
            Err(InvalidChannelList::TooMany { count: 3, limit: 2 })
        ));
    }
}
