//! Grouping: caught-up streams of one channel written in one pass.
//!
//! Woken the usual way, every stream of a channel becomes a runnable task
//! per message: a thousand subscribers cost a thousand wake-ups, each
//! scheduled behind whatever else is ready, before the last of them has
//! the message. A stream that is caught up instead *joins its channel's
//! group*: it hands the hub a [`GroupWriter`] (its socket, as the
//! transport frames it) and its task sleeps. One task per group, woken by
//! the channel's commits, passes over the members and writes to each what
//! lies between its position and the watermark, read once from the live
//! window for every member at the same position. A pass that takes long
//! gives way to other tasks now and then; whatever was published meanwhile
//! goes into the next pass, several messages to a write, so a busy channel
//! costs fewer writes per message, not more.
//!
//! The group only ever writes without waiting. A member is *handed back*
//! to its own task, which reads and writes the usual way, when:
//! - its socket did not take a whole write (the writer keeps the rest, and
//!   the task finishes it),
//! - it fell behind the live window (it reads the store, with gap
//!   detection),
//! - the history changed (it reports the `reset` gaps), or
//! - the group's task ended without finishing (a writer panicked): every
//!   member is handed back, and the next to join starts a new task, or
//! - the transport asked for every stream back (`Hub::hand_back_grouped`:
//!   the server's rules for its streams changed).
//!
//! The task itself leaves the group to send a heartbeat, at the end of a
//! credential, at shutdown, or when its client left ([`Subscription::leave_group`]).
//! A member is written only under its own lock and only while it is in the
//! group, so once it has left, nothing but its task writes its socket.
//!
//! Order and exactness: a member's position only grows, messages come from
//! the live window (one channel's messages in order, contiguous above its
//! base), and at most one pass runs per group. So every message after the
//! position is written once, in order, by the group or by the task after
//! it, never both.
//!
//! [`Subscription::leave_group`]: crate::Subscription::leave_group

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use comet_protocol::{Message, Seq};
use tokio::sync::Notify;

use crate::feed::{ChannelEntry, Feed};
use crate::pace::{PaceConfig, Progress};
use crate::subscription::BatchLimit;

/// Members written between chances for other tasks to run.
const YIELD_EVERY: usize = 64;

/// How long a pass that was outrun waits, at most, before the next.
const GATHER: Duration = Duration::from_millis(1);

/// How many messages a pass that was outrun waits for, at most, before
/// the next (fewer when publish back-pressure allows less lag).
const GATHER_MOST: usize = 16;

/// The writing side of a grouped stream (implemented by a transport).
pub trait GroupWriter: Send + Sync {
    /// Writes `messages`, in order, without blocking. Called by the group's
    /// task, one call at a time per member. Whatever the socket does not
    /// take at once is kept for the stream's task, and [`Written::Stopped`]
    /// returned: the member then leaves the group. `encoded` holds what
    /// writers made of these same messages for earlier members of the
    /// pass (see [`Encoded`]).
    fn write(&self, messages: &[Arc<Message>], encoded: &mut Encoded) -> Written;

    /// The member was handed back: wake its task. Quick, never blocks.
    fn handed_back(&self);
}

/// The bytes writers made of one read of the window, shared by the
/// members a pass gives the same messages (under a flood, most of them):
/// each encoding is made once per read, not once per member. Kept by kind
/// (a writer's own key, e.g. its framing); emptied when the pass reads
/// other messages.
#[derive(Debug, Default)]
pub struct Encoded(Vec<(u8, Bytes)>);

impl Encoded {
    /// The bytes of `kind`, made by `encode` if no earlier member's writer
    /// of that kind made them.
    pub fn get_or_insert_with(&mut self, kind: u8, encode: impl FnOnce() -> Bytes) -> Bytes {
        if let Some((_, bytes)) = self.0.iter().find(|(known, _)| *known == kind) {
            return bytes.clone();
        }
        let bytes = encode();
        self.0.push((kind, bytes.clone()));
        bytes
    }
}

/// What a [`GroupWriter::write`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Everything went out.
    All,
    /// Not everything went out (the rest is kept for the task to finish),
    /// or the socket failed: the member leaves the group.
    Stopped,
}

/// The members of one channel's group, and whether its task runs.
#[derive(Default)]
pub(crate) struct Group {
    members: Mutex<Members>,
    /// Members in the group (their state says so); the list may still
    /// hold some that left, up to about as many again (see
    /// [`Members::prune`]).
    grouped: AtomicUsize,
    /// A member that may be behind joined, or the last one left.
    changed: Notify,
}

#[derive(Default)]
struct Members {
    list: Vec<Arc<Member>>,
    /// Changes whenever `list` does, so the task copies it only then.
    version: u64,
    running: bool,
}

impl Members {
    fn push(&mut self, member: Arc<Member>) {
        self.list.push(member);
        self.version += 1;
    }

    /// Lets go of members that left once they are as many as those in the
    /// group (and a few more): the list stays within about twice the
    /// group, and is not walked for this at every pass.
    fn prune(&mut self, grouped: usize) {
        if self.list.len() >= 2 * grouped + 64 {
            self.list.retain(|member| member.is_grouped());
            self.version += 1;
        }
    }
}

impl Group {
    fn members(&self) -> MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands every member back to its own task (which may join again).
    pub(crate) fn hand_back_all(&self) {
        let members = self.members().list.clone();
        for member in members {
            let state = member.state();
            if state.grouped {
                member.hand_back(state);
            }
        }
    }
}

/// One grouped stream.
pub(crate) struct Member {
    writer: Arc<dyn GroupWriter>,
    state: Mutex<MemberState>,
    /// The subscription's channel (one), for its progress.
    entries: Arc<[Arc<ChannelEntry>]>,
    progress: Arc<Progress>,
    limit: BatchLimit,
    /// The feed's generation when it joined: a member of another history is
    /// handed back.
    generation: u64,
}

struct MemberState {
    /// Everything up to here was written.
    position: Seq,
    /// In the group: the group may write it.
    grouped: bool,
}

impl Member {
    fn state(&self) -> MutexGuard<'_, MemberState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_grouped(&self) -> bool {
        self.state().grouped
    }

    /// Writes what lies between the member's position and the watermark
    /// now (so a message published during a pass reaches the members the
    /// pass has not got to yet), or hands the member back.
    fn pass(&self, feed: &Feed, window: &mut WindowRead) {
        let mut state = self.state();
        if !state.grouped {
            return;
        }
        let watermark = feed.watermark();
        // Looked at after the watermark: a new history moves the
        // generation before it starts the watermark again from zero.
        if feed.generation() != self.generation {
            return self.hand_back(state);
        }
        if state.position >= watermark {
            return;
        }
        let entry = &self.entries[0];
        let Some((messages, upto, encoded)) =
            window.read(entry, state.position, watermark, self.limit)
        else {
            return self.hand_back(state);
        };
        // A window read after a change of history may hold the new one's
        // messages: the generation says which history it read.
        if feed.generation() != self.generation {
            return self.hand_back(state);
        }
        let written = if messages.is_empty() {
            Written::All
        } else {
            self.writer.write(messages, encoded)
        };
        state.position = upto;
        self.progress
            .advance(&self.entries, upto, true, upto >= watermark);
        if written == Written::Stopped {
            self.hand_back(state);
        }
    }

    fn hand_back(&self, mut state: MutexGuard<'_, MemberState>) {
        state.grouped = false;
        drop(state);
        self.left();
        self.writer.handed_back();
    }

    /// Counts the member out (its state says it left); the last one out
    /// wakes the task, which ends.
    fn left(&self) {
        let group = &self.entries[0].group;
        if group.grouped.fetch_sub(1, Ordering::SeqCst) == 1 {
            group.changed.notify_one();
        }
    }
}

/// The last read of a live window in a pass, shared by every member at
/// the same position with the same limit.
#[derive(Default)]
struct WindowRead {
    key: Option<(Seq, Seq, BatchLimit)>,
    /// `None`: the window no longer reaches back to the position.
    read: Option<(Vec<Arc<Message>>, Seq)>,
    /// What writers made of `read`.
    encoded: Encoded,
}

impl WindowRead {
    /// Messages after `after` up to `watermark` within `limit`, the
    /// position once they are written, and what writers made of them;
    /// `None` when the window no longer reaches back to `after`.
    fn read(
        &mut self,
        entry: &ChannelEntry,
        after: Seq,
        watermark: Seq,
        limit: BatchLimit,
    ) -> Option<(&[Arc<Message>], Seq, &mut Encoded)> {
        let key = (after, watermark, limit);
        if self.key != Some(key) {
            self.key = Some(key);
            self.read = entry
                .window()
                .read(after, watermark, limit.messages.max(1))
                .map(|messages| fit(messages, watermark, limit));
            self.encoded.0.clear();
        }
        let encoded = &mut self.encoded;
        self.read
            .as_ref()
            .map(|(messages, upto)| (&messages[..], *upto, encoded))
    }
}

/// Cuts `messages` (at most `limit.messages`) to `limit.bytes` (the first
/// always fits). The position once they are written: `watermark`, unless
/// the limit may have left some for later.
fn fit(
    mut messages: Vec<Arc<Message>>,
    watermark: Seq,
    limit: BatchLimit,
) -> (Vec<Arc<Message>>, Seq) {
    let read = messages.len();
    let mut bytes = 0usize;
    let fits = messages
        .iter()
        .enumerate()
        .take_while(|(index, message)| {
            bytes = bytes.saturating_add(message.data().len());
            *index == 0 || bytes <= limit.bytes
        })
        .count();
    let cut = fits < read || read >= limit.messages.max(1);
    messages.truncate(fits);
    let upto = match messages.last() {
        Some(last) if cut => last.seq(),
        _ => watermark,
    };
    (messages, upto)
}

/// Adds a member at `position` (the watermark is not beyond it) to
/// `entry`'s group, starting the group's task if none runs.
pub(crate) fn join(
    feed: &Arc<Feed>,
    entry: &Arc<ChannelEntry>,
    member: Arc<Member>,
    position: Seq,
    pace: PaceConfig,
) {
    let (start, behind) = {
        let mut members = entry.group.members();
        let grouped = entry.group.grouped.fetch_add(1, Ordering::SeqCst);
        members.prune(grouped);
        members.push(member);
        // Looked at under the lock, after the push: a commit this look
        // misses wakes the task, whose next look at the list (under this
        // lock) comes after the push.
        let behind = feed.watermark() > position;
        (!std::mem::replace(&mut members.running, true), behind)
    };
    if start {
        // Half the lag publishes may run ahead: a healthy member never
        // makes a publish wait while its pass gathers.
        let enough = match pace.max_lag {
            0 => GATHER_MOST,
            lag => (lag / 2).clamp(1, GATHER_MOST),
        };
        tokio::spawn(run(feed.clone(), entry.clone(), enough));
    } else if behind {
        entry.group.changed.notify_one();
    }
}

/// A stream in its channel's group (see [`crate::Subscription::join_group`]).
/// Dropping it takes the stream out of the group.
pub struct Grouped {
    pub(crate) member: Arc<Member>,
}

impl Grouped {
    /// Takes the member out of the group: after this, nothing but the
    /// stream's task writes its socket. Its position, for the subscription.
    pub(crate) fn leave(&self) -> Seq {
        let mut state = self.member.state();
        if state.grouped {
            state.grouped = false;
            self.member.left();
        }
        state.position
    }
}

impl Drop for Grouped {
    fn drop(&mut self) {
        self.leave();
    }
}

impl Member {
    pub(crate) fn new(
        writer: Arc<dyn GroupWriter>,
        position: Seq,
        entries: Arc<[Arc<ChannelEntry>]>,
        progress: Arc<Progress>,
        limit: BatchLimit,
        generation: u64,
    ) -> Self {
        Self {
            writer,
            state: Mutex::new(MemberState {
                position,
                grouped: true,
            }),
            entries,
            progress,
            limit,
            generation,
        }
    }
}

/// Waits [`GATHER`], or less once `enough` messages of the channel lie
/// after `since`.
async fn gather(entry: &ChannelEntry, since: Seq, enough: usize) {
    let deadline = tokio::time::Instant::now() + GATHER;
    loop {
        let committed = entry.notify.notified();
        tokio::pin!(committed);
        committed.as_mut().enable();
        let after = {
            let window = entry.window();
            let before = window.messages.partition_point(|m| m.seq() <= since);
            window.messages.len() - before
        };
        if after >= enough || tokio::time::timeout_at(deadline, committed).await.is_err() {
            return;
        }
    }
}

/// A group's task while it runs. Dropped before the task ended (a writer
/// panicked, or the runtime is shutting down), it hands every member back
/// to its own task, and the next stream to join starts a new one: a group
/// never stops writing with members left in it.
struct Running<'a> {
    entry: &'a ChannelEntry,
    ended: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let members = {
            let mut group = self.entry.group.members();
            group.running = false;
            std::mem::take(&mut group.list)
        };
        for member in members {
            let state = member.state();
            if state.grouped {
                member.hand_back(state);
            }
        }
    }
}

/// The group's task: a pass over the members after every commit to the
/// channel, until the group is empty. Commits that come while a pass runs
/// are written by the next one; when they keep coming (the channel is
/// saturated), the next pass first waits [`GATHER`] or until `enough`
/// more have come, so that each write carries several messages.
async fn run(feed: Arc<Feed>, entry: Arc<ChannelEntry>, enough: usize) {
    let mut running = Running {
        entry: &entry,
        ended: false,
    };
    // The list as the task last copied it (members that left are skipped
    // by their pass), and the list's version then.
    let mut members: Vec<Arc<Member>> = Vec::new();
    let mut copied = None;
    loop {
        // Registered before the watermark is read: a commit after the read
        // wakes the wait below.
        let committed = entry.notify.notified();
        let changed = entry.group.changed.notified();
        tokio::pin!(committed, changed);
        committed.as_mut().enable();
        {
            let mut group = entry.group.members();
            // Joins count themselves in under this lock; a member counts
            // itself out once its state says it left.
            let grouped = entry.group.grouped.load(Ordering::SeqCst);
            if grouped == 0 {
                group.list.clear();
                group.running = false;
                running.ended = true;
                return;
            }
            group.prune(grouped);
            if copied != Some(group.version) {
                members.clone_from(&group.list);
                copied = Some(group.version);
            }
        }
        let started = feed.watermark();
        let mut window = WindowRead::default();
        for (index, member) in members.iter().enumerate() {
            member.pass(&feed, &mut window);
            if index % YIELD_EVERY == YIELD_EVERY - 1 {
                tokio::task::yield_now().await;
            }
        }
        // Published during the pass: the members it had passed by then
        // have not got it.
        let newest = entry.window().messages.back().map(|message| message.seq());
        if newest.is_some_and(|newest| newest > started) {
            // Outrun: the channel's publishes come faster than passes.
            gather(&entry, started, enough).await;
            continue;
        }
        tokio::select! {
            () = committed => {}
            () = changed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use comet_protocol::{ChannelName, Data, Epoch, EventType};

    use super::*;

    fn messages(sizes: &[usize]) -> Vec<Arc<Message>> {
        let channel = ChannelName::new("a").unwrap();
        sizes
            .iter()
            .enumerate()
            .map(|(index, size)| {
                Arc::new(Message::new(
                    Epoch::new("e").unwrap(),
                    Seq(index as u64 + 1),
                    channel.clone(),
                    EventType::message(),
                    Data::from("x".repeat(*size)),
                    0,
                ))
            })
            .collect()
    }

    fn seqs(messages: &[Arc<Message>]) -> Vec<u64> {
        messages.iter().map(|message| message.seq().0).collect()
    }

    #[test]
    fn a_write_keeps_to_the_batch_limits_and_the_position_stops_at_what_it_carries() {
        let watermark = Seq(9);
        let limit = |messages, bytes| BatchLimit { messages, bytes };

        // Everything fits: the position moves to the watermark (nothing of
        // the channel lies between its last message and it).
        let (kept, upto) = fit(messages(&[10, 10, 10]), watermark, limit(8, 100));
        assert_eq!((seqs(&kept), upto), (vec![1, 2, 3], watermark));

        // Bytes: the third message would pass the budget.
        let (kept, upto) = fit(messages(&[40, 40, 40, 40]), watermark, limit(8, 100));
        assert_eq!((seqs(&kept), upto), (vec![1, 2], Seq(2)));

        // A message larger than the budget still goes, alone.
        let (kept, upto) = fit(messages(&[500, 10]), watermark, limit(8, 100));
        assert_eq!((seqs(&kept), upto), (vec![1], Seq(1)));

        // The window read stopped at the message limit: more may follow.
        let (kept, upto) = fit(messages(&[1, 1, 1]), watermark, limit(3, 100));
        assert_eq!((seqs(&kept), upto), (vec![1, 2, 3], Seq(3)));
    }
}
