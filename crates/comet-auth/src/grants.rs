//! What a credential allows: channel patterns to publish to and to
//! subscribe to.

use comet_protocol::ChannelName;

use crate::pattern::{ChannelPattern, any_matches};

/// The two things a client may be allowed to do with a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Store messages in it.
    Publish,
    /// Read it (every transport, and its inspection).
    Subscribe,
}

/// What one credential allows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// Channels it may publish to.
    pub publish: Vec<ChannelPattern>,
    /// Channels it may subscribe to.
    pub subscribe: Vec<ChannelPattern>,
}

impl Grants {
    /// The same patterns for both actions (an API key's grants).
    pub fn both(patterns: Vec<ChannelPattern>) -> Self {
        Self {
            publish: patterns.clone(),
            subscribe: patterns,
        }
    }

    /// The patterns for `action`.
    pub fn patterns(&self, action: Action) -> &[ChannelPattern] {
        match action {
            Action::Publish => &self.publish,
            Action::Subscribe => &self.subscribe,
        }
    }

    /// True when `action` is allowed on `channel`.
    pub fn allows(&self, action: Action, channel: &ChannelName) -> bool {
        any_matches(self.patterns(action), channel)
    }

    /// True when some grant is `*` (every channel).
    pub fn has_everything(&self) -> bool {
        self.publish
            .iter()
            .chain(&self.subscribe)
            .any(ChannelPattern::is_everything)
    }
}
