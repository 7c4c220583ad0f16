//! The tail: what the writer's open transaction holds, as readers see it.
//!
//! The writer commits SQLite every few tens of milliseconds, not at every
//! group (see `writer` and `journal`); a group is acknowledged once its
//! journal record is synced. Readers use connections of their own, which
//! see only what SQLite committed, so the writer also keeps here what
//! changed since its last commit: the channel rows and the messages stored.
//!
//! A reader pairs a SQLite snapshot with the tail it continues: the
//! snapshot's head must be the tail's `base` (see `reader`). A commit moves
//! the base to the new head and empties the tail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use comet_protocol::{ChannelName, Message, Seq};

use crate::database::ChannelRow;

/// What changed since SQLite's last commit.
#[derive(Default)]
pub(crate) struct Tail {
    /// SQLite's committed head: what is at or below it, every reader's
    /// snapshot holds.
    base: Seq,
    /// The channel rows changed since, by name.
    channels: HashMap<ChannelName, ChannelRow>,
    /// The messages stored since, by channel, oldest first: a run per
    /// group, so a reader takes a channel's messages with one reference per
    /// group, not one per message.
    messages: HashMap<ChannelName, Vec<Run>>,
}

/// The messages one group stored to one channel, in order.
type Run = Arc<[Arc<Message>]>;

/// One channel as the tail holds it.
#[derive(Clone, Default)]
pub(crate) struct ChannelTail {
    /// Its row, if it changed since the base.
    pub(crate) row: Option<ChannelRow>,
    /// Its messages stored since the base, a run per group.
    runs: Vec<Run>,
}

impl ChannelTail {
    /// Its messages stored since the base, oldest first.
    pub(crate) fn messages(&self) -> impl DoubleEndedIterator<Item = &Arc<Message>> {
        self.runs.iter().flat_map(|run| run.iter())
    }
}

/// The tail, shared by the writer and the readers.
#[derive(Clone, Default)]
pub(crate) struct SharedTail(Arc<Mutex<Tail>>);

impl SharedTail {
    /// A tail continuing a database whose head is `base`.
    pub(crate) fn new(base: Seq) -> Self {
        let tail = Tail {
            base,
            ..Tail::default()
        };
        Self(Arc::new(Mutex::new(tail)))
    }

    fn lock(&self) -> MutexGuard<'_, Tail> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The base, and what the tail holds of `channel`.
    pub(crate) fn channel(&self, channel: &ChannelName) -> (Seq, ChannelTail) {
        let tail = self.lock();
        let view = ChannelTail {
            row: tail.channels.get(channel).cloned(),
            runs: tail.messages.get(channel).cloned().unwrap_or_default(),
        };
        (tail.base, view)
    }

    /// The base, and every channel row changed since.
    pub(crate) fn rows(&self) -> (Seq, HashMap<ChannelName, ChannelRow>) {
        let tail = self.lock();
        (tail.base, tail.channels.clone())
    }

    /// Takes in a group the writer stored: the channel rows it changed and
    /// its messages. Messages its channel no longer retains are let go.
    pub(crate) fn stored<'a>(
        &self,
        rows: impl Iterator<Item = (&'a ChannelName, &'a ChannelRow)>,
        messages: impl Iterator<Item = &'a Arc<Message>>,
    ) {
        let mut by_channel: HashMap<&ChannelName, Vec<Arc<Message>>> = HashMap::new();
        for message in messages {
            by_channel
                .entry(message.channel())
                .or_default()
                .push(message.clone());
        }
        let mut tail = self.lock();
        for (channel, run) in by_channel {
            tail.messages
                .entry(channel.clone())
                .or_default()
                .push(run.into());
        }
        for (name, row) in rows {
            if let Some(runs) = tail.messages.get_mut(name) {
                // Runs wholly trimmed go; a run trimmed in part stays, and
                // readers skip what its row marks as trimmed.
                let trimmed = runs.partition_point(|run| {
                    run.last()
                        .is_some_and(|last| last.seq() <= row.trimmed_upto)
                });
                runs.drain(..trimmed);
            }
            tail.channels.insert(name.clone(), row.clone());
        }
    }

    /// How many channels were appended to since the base.
    pub(crate) fn channels_appended(&self) -> usize {
        self.lock().messages.len()
    }

    /// SQLite committed everything up to `head`: the tail starts again
    /// from there.
    pub(crate) fn committed(&self, head: Seq) {
        let mut tail = self.lock();
        tail.base = head;
        tail.channels.clear();
        tail.messages.clear();
    }
}
