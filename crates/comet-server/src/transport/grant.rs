//! What allowed an open stream, kept to judge it again when the
//! authorization rules are replaced (a configuration reload, see
//! `crate::auth::Rules`).
//!
//! A stream is judged once when it opens. If the rules change while it is
//! open, it is judged again with the same token and channels; a stream
//! the new rules refuse ends: a WebSocket with close code 4403, an SSE or
//! NDJSON stream by ending its response (the client's reconnection is
//! then refused with the usual 401 or 403). A stream looks before each
//! batch and heartbeat it sends (one atomic read), so a revoked stream
//! sends nothing more. An idle stream on the direct path waits in its
//! channel's group, and a change hands every grouped stream back to its
//! task (`crate::connection`): it ends at once. One waiting on its own
//! (through the router) ends at its next message or heartbeat, without
//! sending either: a wait of its own for the change would cost every
//! stream's task a few hundred bytes. A long poll is judged again before
//! it answers with messages, and answered with the new rules' refusal
//! instead (401 or 403).

use comet_auth::Refusal;
use comet_protocol::ChannelName;
use tokio::sync::watch;

use crate::auth::Rules;

/// An open stream's token and channels, and the changes of the rules it
/// has not been judged by.
pub(crate) struct Grant {
    token: Option<Box<str>>,
    channels: Box<[ChannelName]>,
    changes: watch::Receiver<()>,
}

impl Grant {
    /// The grant of a subscription about to be judged by `rules`: their
    /// changes from now on are its to judge.
    pub(crate) fn new(token: Option<&str>, channels: &[ChannelName], rules: &Rules) -> Self {
        Self {
            token: token.map(Box::from),
            channels: channels.into(),
            changes: rules.changes(),
        }
    }

    /// True if `rules` changed since the stream was last judged and no
    /// longer allow it. Never waits.
    pub(crate) fn revoked_now(&mut self, rules: &Rules) -> bool {
        self.refusal_now(rules).is_some()
    }

    /// Why `rules` no longer allow the subscription, if they changed since
    /// it was last judged and refuse it now. Never waits.
    pub(crate) fn refusal_now(&mut self, rules: &Rules) -> Option<Refusal> {
        if !self.changed() {
            return None;
        }
        self.changes.mark_unchanged();
        rules
            .current()
            .subscribe(self.token.as_deref(), &self.channels)
            .err()
    }

    /// The subscription came with a token.
    pub(crate) fn token_given(&self) -> bool {
        self.token.is_some()
    }

    /// A look at the changes of the rules apart from the grant, for one
    /// that must not deliver after one (a parked long poll's catch).
    pub(crate) fn changes(&self) -> watch::Receiver<()> {
        self.changes.clone()
    }

    /// The rules changed since the stream was last judged.
    pub(crate) fn changed(&self) -> bool {
        self.changes.has_changed().unwrap_or(false)
    }
}
