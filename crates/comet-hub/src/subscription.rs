//! A subscription: a position in the store-wide order and the channels it
//! follows.
//!
//! Reading is pull-based. [`Subscription::next_batch`] looks for messages of
//! its channels between its position and the feed's watermark: in the live
//! windows while they reach back far enough, in the store once they do not
//! (the subscriber fell behind, or resumed from an old cursor). If the store
//! no longer holds what lay after the position, a [`Gap`] is reported first.
//! Nothing is queued per subscriber beyond the one batch being returned
//! (and gap signals): a backlog is not loaded when the subscription opens,
//! it is a starting point per channel (a *floor*) read like any history,
//! batch by batch. Store reads are bounded by the batch's byte budget, so a
//! batch of large messages reads only what it delivers.
//!
//! When the history behind the hub is replaced (a shared store lost its
//! data: a new epoch), the subscription reports a reset gap for each of its
//! channels and reads the new history from its start.
//!
//! Both reading methods are cancel-safe: state changes only after the last
//! `.await`, so a transport may race them against a heartbeat timer.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use comet_protocol::{ChannelList, ChannelName, Cursor, Epoch, Gap, GapReason, Message, Seq};

use comet_store::ReadLimit;

use crate::feed::ChannelEntry;
use crate::group::{self, GroupWriter, Grouped, Member};
use crate::pace::Progress;
use crate::park::{Catch, Parked, Slot};
use crate::{HubError, Shared};

/// Where a subscription begins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Only messages stored from now on.
    Now,
    /// Everything after this cursor that is still retained. A cursor from
    /// another epoch is reported as a [`GapReason::Reset`] gap for every
    /// channel, and everything retained is delivered.
    Since(Cursor),
    /// The newest `n` retained messages of each channel, then live.
    Backlog(usize),
}

/// How much one batch may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimit {
    /// Most messages (per channel, when reading several channels).
    pub messages: usize,
    /// Most bytes of message data in the batch; the first message is always
    /// included, whatever its size.
    pub bytes: usize,
}

impl BatchLimit {
    /// A limit by message count only.
    pub fn messages(messages: usize) -> Self {
        Self {
            messages,
            bytes: usize::MAX,
        }
    }
}

/// One thing to deliver.
#[derive(Clone, Debug)]
pub enum Item {
    /// A message.
    Message(Arc<Message>),
    /// A signal that messages of a channel were missed.
    Gap(Gap),
}

/// Per-channel reading state.
#[derive(Clone, Copy, Debug, Default)]
struct Following {
    /// Read this channel only after here (a backlog's start); below the
    /// position it no longer matters.
    floor: Seq,
    /// The last read came from the live window.
    live: bool,
    /// A reset gap was announced; the first store read must not announce a
    /// second gap for the same loss.
    reset_announced: bool,
    /// Losses up to here were already reported.
    reported_loss_upto: Seq,
}

/// A live subscription. Dropping it stops following its channels.
pub struct Subscription {
    shared: Arc<Shared>,
    names: Vec<ChannelName>,
    entries: Arc<[Arc<ChannelEntry>]>,
    following: Vec<Following>,
    position: Seq,
    /// The history the position counts in, and the feed's generation for
    /// it.
    epoch: Epoch,
    generation: u64,
    /// Signals due before anything else (reset gaps): at most one per
    /// channel.
    pending: VecDeque<Item>,
    /// How far it has read, for publish back-pressure.
    progress: Arc<Progress>,
}

impl Subscription {
    pub(crate) async fn open(
        shared: Arc<Shared>,
        channels: &ChannelList,
        start: Start,
    ) -> Result<Self, HubError> {
        let names = channels.names().to_vec();
        // The generation first: a change of history after this look is
        // found by the first read.
        let generation = shared.feed.generation();
        let epoch = shared.feed.epoch();
        let progress = Arc::new(Progress::new(Seq::ZERO));
        let entries: Arc<[Arc<ChannelEntry>]> = shared.feed.follow(&names, &progress).into();
        let position = shared.feed.watermark();
        let mut subscription = Self {
            following: vec![Following::default(); names.len()],
            shared,
            names,
            entries,
            position,
            epoch,
            generation,
            pending: VecDeque::new(),
            progress,
        };
        // A cursor beyond what this node heard of may come from another
        // node that announced it first: the shared store says whether the
        // history reached it.
        let reached = match &start {
            Start::Since(cursor) if cursor.epoch == subscription.epoch => {
                let store = &subscription.shared.store;
                cursor.seq <= store.head() || cursor.seq <= store.confirmed_head().await?
            }
            _ => false,
        };
        match start {
            Start::Now | Start::Backlog(0) => {}
            Start::Since(cursor) if reached => {
                // A position beyond the watermark (but not beyond the
                // store's head) is legitimate when another node announced
                // it first; reading simply waits for it.
                subscription.position = cursor.seq;
            }
            Start::Since(_) => {
                // Another history, or a position this history never
                // reached (its data was restored from an older backup):
                // the ids the client holds may name other messages here.
                let gaps = subscription.start_over();
                subscription.pending.extend(gaps);
            }
            Start::Backlog(count) => {
                // Each channel starts just before its newest `count`; the
                // subscription reads from the earliest of those starts.
                for (name, following) in subscription
                    .names
                    .iter()
                    .zip(subscription.following.iter_mut())
                {
                    let floor = subscription
                        .shared
                        .store
                        .backlog_start(name, count, position)
                        .await?;
                    following.floor = floor;
                    following.reported_loss_upto = floor;
                }
                subscription.position = subscription
                    .following
                    .iter()
                    .map(|following| following.floor)
                    .min()
                    .unwrap_or(position);
            }
        }
        Ok(subscription)
    }

    /// The channels followed, sorted.
    pub fn channels(&self) -> &[ChannelName] {
        &self.names
    }

    /// A cursor after everything delivered so far (possibly beyond the last
    /// message delivered, when nothing of these channels lies in between).
    /// Items of a batch not yet taken are not covered.
    pub fn cursor(&self) -> Cursor {
        Cursor::new(self.epoch.clone(), self.position)
    }

    /// What is deliverable now within `limit` (pending signals and backlog
    /// first, then stored and live messages); empty if nothing is. Never
    /// waits for a publish.
    pub async fn ready_batch(&mut self, limit: BatchLimit) -> Result<Vec<Item>, HubError> {
        let mut budget = Budget::new(limit);
        let pending = self
            .pending
            .iter()
            .take_while(|item| budget.admit(item))
            .count();
        let mut fresh = Vec::new();
        if pending == self.pending.len() && budget.has_room() {
            fresh = self.collect(&mut budget).await?;
        }
        // Nothing changed before the last `.await`: cancel-safe.
        let mut items: Vec<Item> = self.pending.drain(..pending).collect();
        items.extend(fresh);
        Ok(items)
    }

    /// The next non-empty batch, waiting for a publish if necessary.
    pub async fn next_batch(&mut self, limit: BatchLimit) -> Result<Vec<Item>, HubError> {
        loop {
            if let Some(items) = self.take_pending(limit) {
                return Ok(items);
            }
            // Register for wake-ups before looking, so that a message
            // announced between the look and the wait still wakes us.
            if let [entry] = &*self.entries {
                // One channel (the usual case): no list of wake-ups to build.
                let entry = entry.clone();
                let mut wakeup = std::pin::pin!(entry.notify.notified());
                wakeup.as_mut().enable();
                let items = self.collect(&mut Budget::new(limit)).await?;
                if !items.is_empty() {
                    return Ok(items);
                }
                wakeup.await;
                continue;
            }
            let entries = self.entries.clone();
            let mut wakeups: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> = entries
                .iter()
                .map(|entry| Box::pin(entry.notify.notified()))
                .collect();
            for wakeup in &mut wakeups {
                wakeup.as_mut().enable();
            }
            let items = self.collect(&mut Budget::new(limit)).await?;
            if !items.is_empty() {
                return Ok(items);
            }
            poll_fn(|cx| {
                for wakeup in &mut wakeups {
                    if wakeup.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                }
                Poll::Pending
            })
            .await;
        }
    }

    /// Parks the subscription for its next message (see [`Catch`]): when
    /// the first message of its channels after its position is stored,
    /// `catch` is woken and handed that message. Call it when
    /// [`Self::ready_batch`] found nothing. `None` (nothing parked, and
    /// `catch` is never called) when something may have arrived since:
    /// read again before parking.
    pub fn park(&self, catch: Arc<dyn Catch>) -> Option<Parked> {
        self.park_with(catch, || {})
    }

    /// [`Self::park`], running `between` after the slot is in place and
    /// before the watermark is looked at (tests force a commit there).
    fn park_with(&self, catch: Arc<dyn Catch>, between: impl FnOnce()) -> Option<Parked> {
        if !self.pending.is_empty() {
            return None;
        }
        let generation = self.generation;
        let slot = Arc::new(Slot::new(self.position, catch));
        // Every list stays locked from the push to the look at the
        // watermark. A commit raises the watermark before it takes the
        // list's lock (see `Feed::committed`): one that raised it before
        // the look is seen here, and then finds no slot; one that raises it
        // after the look catches the slot with the first message after the
        // position. So a refused slot is never caught, and a caught one is
        // never caught by a message later than one it missed.
        let mut lists: Vec<_> = self.entries.iter().map(|entry| entry.parked()).collect();
        for list in &mut lists {
            list.push(slot.clone());
        }
        between();
        // A change of history moves the generation before it takes these
        // lists to let their polls go.
        let feed = &self.shared.feed;
        if feed.generation() != generation || feed.watermark() > self.position {
            for list in &mut lists {
                list.pop();
            }
            return None;
        }
        Some(Parked { slot })
    }

    /// Whether [`Self::join_group`] would join now: the subscription follows
    /// one channel, has read everything announced and has nothing pending.
    /// A quick look, so a caller can skip building a writer that would not
    /// be taken (a commit may still come between this and the join).
    pub fn may_join_group(&self) -> bool {
        let feed = &self.shared.feed;
        self.entries.len() == 1
            && self.pending.is_empty()
            && self.following[0].floor <= self.position
            && feed.generation() == self.generation
            && feed.watermark() <= self.position
    }

    /// Joins the group of the subscription's channel (see `crate::group`):
    /// from now on its messages are written by `writer`, in the channel's
    /// pass, until the stream is handed back (`writer` is told) or leaves
    /// ([`Self::leave_group`]). Call it when [`Self::next_batch`] would
    /// wait. `None` (nothing joined) unless the subscription follows one
    /// channel, has read everything announced and has nothing pending.
    pub fn join_group(&self, writer: Arc<dyn GroupWriter>, limit: BatchLimit) -> Option<Grouped> {
        let [entry] = &*self.entries else {
            return None;
        };
        if !self.may_join_group() {
            return None;
        }
        let feed = &self.shared.feed;
        let member = Arc::new(Member::new(
            writer,
            self.position,
            self.entries.clone(),
            self.progress.clone(),
            limit,
            self.generation,
        ));
        group::join(feed, entry, member.clone(), self.position, self.shared.pace);
        Some(Grouped { member })
    }

    /// Takes the stream out of its group: whatever the group wrote counts
    /// as read, and nothing but the caller writes the stream after this.
    pub fn leave_group(&mut self, grouped: Grouped) {
        let position = grouped.leave();
        if position > self.position {
            self.position = position;
            // The group read it from the live window.
            self.following[0].live = true;
            self.following[0].reset_announced = false;
        }
    }

    fn take_pending(&mut self, limit: BatchLimit) -> Option<Vec<Item>> {
        if self.pending.is_empty() {
            return None;
        }
        let mut budget = Budget::new(limit);
        let count = self
            .pending
            .iter()
            .take_while(|item| budget.admit(item))
            .count();
        Some(self.pending.drain(..count).collect())
    }

    /// Reports a reset gap for every channel and goes back to the start of
    /// the history: what the client holds names nothing in this one.
    fn start_over(&mut self) -> Vec<Item> {
        self.position = Seq::ZERO;
        self.names
            .iter()
            .zip(self.following.iter_mut())
            .map(|(name, following)| {
                *following = Following {
                    reset_announced: true,
                    ..Following::default()
                };
                self.shared.stats.record_gap(GapReason::Reset);
                Item::Gap(Gap {
                    channel: name.clone(),
                    reason: GapReason::Reset,
                })
            })
            .collect()
    }

    /// Reads what lies between the position and the watermark.
    async fn collect(&mut self, budget: &mut Budget) -> Result<Vec<Item>, HubError> {
        let generation = self.shared.feed.generation();
        if generation != self.generation {
            if generation % 2 == 1 {
                // The history is being replaced; its end wakes everyone.
                return Ok(Vec::new());
            }
            self.generation = generation;
            self.epoch = self.shared.feed.epoch();
            return Ok(self.start_over());
        }
        let per_channel_limit = budget.messages_left().max(1);
        let watermark = self.shared.feed.watermark();
        if watermark <= self.position {
            self.record_progress(true);
            return Ok(Vec::new());
        }
        let mut following = self.following.clone();
        let mut gaps = Vec::new();
        let mut fell_behind = 0;
        let mut per_channel = Vec::with_capacity(self.entries.len());
        let mut upto = watermark;
        let byte_limit = ReadLimit {
            messages: per_channel_limit,
            bytes: budget.bytes_left() as u64,
        };
        for (index, entry) in self.entries.iter().enumerate() {
            let state = &mut following[index];
            let after = self.position.max(state.floor);
            let from_window = entry.window().read(after, watermark, per_channel_limit);
            let mut truncated = false;
            let messages = match from_window {
                Some(messages) => {
                    state.live = true;
                    state.reset_announced = false;
                    messages
                }
                None => {
                    if state.live {
                        fell_behind += 1;
                        state.live = false;
                    }
                    let name = &self.names[index];
                    let history = self
                        .shared
                        .store
                        .read(name, after, watermark, byte_limit)
                        .await?;
                    truncated = history.truncated;
                    let reported = state.reported_loss_upto.max(after);
                    if history.trimmed_upto > reported && !state.reset_announced {
                        gaps.push(Gap {
                            channel: name.clone(),
                            reason: GapReason::Trimmed,
                        });
                    }
                    state.reported_loss_upto = state.reported_loss_upto.max(history.trimmed_upto);
                    state.reset_announced = false;
                    history.messages
                }
            };
            if (truncated || messages.len() >= per_channel_limit)
                && let Some(last) = messages.last()
            {
                // This channel may have more; deliver nothing beyond it yet,
                // or another channel's later message would overtake it.
                upto = upto.min(last.seq());
            }
            per_channel.push(messages);
        }

        // Everything below is synchronous: the state changes together.
        if self.shared.feed.generation() != generation {
            // The history changed under the reads: they may mix two.
            return Ok(Vec::new());
        }
        let mut items: Vec<Item> = Vec::new();
        for gap in gaps {
            self.shared.stats.record_gap(gap.reason);
            items.push(Item::Gap(gap));
        }
        let mut merged: Vec<Arc<Message>> = if per_channel.len() == 1 {
            per_channel.pop().unwrap_or_default()
        } else {
            let mut merged: Vec<Arc<Message>> = per_channel
                .into_iter()
                .flatten()
                .filter(|m| m.seq() <= upto)
                .collect();
            merged.sort_by_key(|m| m.seq());
            merged
        };
        let fits = merged
            .iter()
            .take_while(|m| budget.admit_message(m))
            .count();
        if let Some(first_left) = merged.get(fits) {
            // Everything before the first message left out is delivered
            // (or lies in none of these channels); the position stops
            // there, whether or not anything fitted.
            upto = Seq(first_left.seq().0.saturating_sub(1));
            merged.truncate(fits);
        }
        items.extend(merged.into_iter().map(Item::Message));
        for _ in 0..fell_behind {
            self.shared.stats.record_fell_behind();
        }
        self.following = following;
        self.position = upto;
        self.record_progress(upto >= watermark);
        Ok(items)
    }

    /// Tells the channels how far it has read (see `crate::pace`).
    fn record_progress(&self, caught_up: bool) {
        let live = self.following.iter().all(|state| state.live);
        self.progress
            .advance(&self.entries, self.position, live, caught_up);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.feed.unfollow(&self.names, &self.progress);
    }
}

/// Counts a batch against its [`BatchLimit`].
struct Budget {
    limit: BatchLimit,
    messages: usize,
    bytes: usize,
}

impl Budget {
    fn new(limit: BatchLimit) -> Self {
        Self {
            limit,
            messages: 0,
            bytes: 0,
        }
    }

    fn has_room(&self) -> bool {
        self.messages < self.limit.messages && self.bytes < self.limit.bytes
    }

    fn messages_left(&self) -> usize {
        self.limit.messages.saturating_sub(self.messages)
    }

    fn bytes_left(&self) -> usize {
        self.limit.bytes.saturating_sub(self.bytes)
    }

    fn admit(&mut self, item: &Item) -> bool {
        match item {
            Item::Message(message) => self.admit_message(message),
            Item::Gap(_) => true,
        }
    }

    fn admit_message(&mut self, message: &Message) -> bool {
        let size = message.data().len();
        let first = self.messages == 0;
        if !first
            && (self.messages >= self.limit.messages
                || self.bytes.saturating_add(size) > self.limit.bytes)
        {
            return false;
        }
        self.messages += 1;
        self.bytes = self.bytes.saturating_add(size);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use comet_protocol::{ChannelList, ChannelName, Data, EventType, Message, Seq};
    use comet_store::{CommitListener, MemoryStore, StoreOptions};

    use super::*;
    use crate::{Hub, HubConfig};

    /// Counts what the hub does with a parked poll.
    #[derive(Default)]
    struct Recorder {
        wakes: Mutex<usize>,
        delivered: Mutex<Vec<Seq>>,
    }

    impl Catch for Recorder {
        fn wake(&self) {
            *self.wakes.lock().unwrap() += 1;
        }

        fn deliver(&self, message: &Arc<Message>) {
            self.delivered.lock().unwrap().push(message.seq());
        }
    }

    /// A commit that lands between the slot's push and the look at the
    /// watermark (the parking task preempted there) must leave a refused
    /// park untouched: if the commit caught the slot, a publisher would
    /// write an answer on a socket whose task answers again.
    #[tokio::test]
    async fn a_commit_between_the_push_and_the_look_never_answers_a_refused_park() {
        let hub = Hub::new(
            Arc::new(MemoryStore::new(StoreOptions::default())),
            HubConfig::default(),
        );
        let channel = ChannelName::new("a").unwrap();
        let list = ChannelList::parse("a", 4).unwrap();
        let mut sub = hub.subscribe(&list, Start::Now).await.unwrap();
        assert!(
            sub.ready_batch(BatchLimit::messages(8))
                .await
                .unwrap()
                .is_empty()
        );

        let recorder = Arc::new(Recorder::default());
        let feed = hub.shared.feed.clone();
        let position = feed.watermark();
        let message = Arc::new(Message::new(
            hub.epoch(),
            Seq(position.0 + 1),
            channel.clone(),
            EventType::message(),
            Data::from("raced".to_string()),
            0,
        ));
        let mut committer = None;
        let parked = sub.park_with(recorder.clone(), || {
            // The commit runs on another thread, as a store's would. The
            // park goes on once the commit has raised the watermark and has
            // either finished (it could take the slot: the race) or has been
            // kept from the slot for a while (as it must be).
            let (commit_feed, message) = (feed.clone(), message.clone());
            let thread = std::thread::spawn(move || commit_feed.committed(&message));
            let deadline = Instant::now() + Duration::from_secs(10);
            while feed.watermark() == position {
                assert!(
                    Instant::now() < deadline,
                    "the commit never raised the watermark"
                );
                std::thread::yield_now();
            }
            let kept_out = Instant::now() + Duration::from_millis(200);
            while !thread.is_finished() && Instant::now() < kept_out {
                std::thread::yield_now();
            }
            committer = Some(thread);
        });
        committer.unwrap().join().unwrap();
        assert!(parked.is_none(), "the watermark moved: parking is refused");

        // The next publish hands caught polls their messages: none is ours.
        hub.publish(
            &channel,
            EventType::message(),
            Data::from("next".to_string()),
        )
        .await
        .unwrap();
        assert!(
            recorder.delivered.lock().unwrap().is_empty(),
            "a refused park was answered"
        );
        assert_eq!(*recorder.wakes.lock().unwrap(), 0);
    }
}
