//! The live side of the hub: followed channels, their live windows, and the
//! watermark.
//!
//! The store calls [`Feed::committed`] once per stored message, in sequence
//! order. The feed appends the message to its channel's live window (if
//! anyone follows the channel), then raises the *watermark* to its sequence
//! number, then wakes the channel's subscribers.
//!
//! Invariant: every message with `seq <= watermark` is either in the live
//! window of its followed channel or was stored before that channel was
//! followed (and so is readable from the store). Two things keep it true:
//! the watermark moves only after the window is appended to, and a channel
//! starts being followed (its entry is created, with the window's base set to
//! the watermark) under the same lock the feed holds while it appends and
//! raises the watermark.
//!
//! Subscribers read only up to a watermark they loaded *before* reading, so a
//! subscription to several channels never delivers a message while an
//! earlier one of another of its channels is still on its way: delivery is
//! in store order, and a single position is a complete cursor.
//!
//! Live windows are bounded twice: by a message count per channel, and by
//! bytes of message data across all windows ([`LiveBytes`]): beyond those
//! bytes the oldest message of any window goes first. A window that loses a
//! message only moves its base; whoever is behind it reads the store.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

use comet_protocol::{ChannelName, Epoch, Message, Seq};
use comet_store::CommitListener;
use tokio::sync::Notify;

use crate::group::Group;
use crate::pace::{ChannelPace, PaceConfig, Progress};
use crate::park::{ParkedList, Slot};
use crate::stats::HubStats;

/// Followed channels and the watermark. The store's commit listener.
pub(crate) struct Feed {
    channels: RwLock<HashMap<ChannelName, Arc<ChannelEntry>>>,
    watermark: AtomicU64,
    /// The history the watermark counts in.
    epoch: RwLock<Epoch>,
    /// Moves on twice per change of history: odd while it is being made.
    generation: AtomicU64,
    live_window: usize,
    live_bytes: Mutex<LiveBytes>,
    /// Parked polls caught by a commit and not yet handed their message
    /// (see `crate::park`).
    caught: Mutex<Vec<Arc<Slot>>>,
    /// Publishes of this hub between the start of their append and the
    /// moment they hand caught polls their messages.
    publishing: AtomicUsize,
}

/// The bytes all live windows hold, and the order their messages came in,
/// for trimming the oldest first when they hold too much. Changed only in
/// [`Feed::committed`] (never concurrent with itself) and when a channel is
/// no longer followed (under the feed's write lock, so never concurrent with
/// a commit either). Entries whose message already left its window (its
/// count limit, or an unfollow) are skipped when met; the queue is
/// compacted when they outnumber the live ones.
struct LiveBytes {
    limit: usize,
    bytes: usize,
    messages: usize,
    order: VecDeque<(Seq, Weak<ChannelEntry>)>,
}

impl LiveBytes {
    /// Accounts for `message`, just added to `entry`'s window, then trims
    /// the oldest messages of all windows while over the limit.
    fn added(&mut self, message: &Message, entry: &Arc<ChannelEntry>) {
        self.bytes += message.data().len();
        self.messages += 1;
        self.order.push_back((message.seq(), Arc::downgrade(entry)));
        while self.bytes > self.limit {
            let Some((seq, entry)) = self.order.pop_front() else {
                break;
            };
            let Some(entry) = entry.upgrade() else {
                continue;
            };
            let mut window = entry.window();
            if window
                .messages
                .front()
                .is_some_and(|front| front.seq() == seq)
            {
                let removed = window.pop_oldest();
                self.removed(removed.as_deref());
            }
        }
        if self.order.len() > 2 * self.messages + 1024 {
            self.order.retain(|(seq, entry)| {
                entry.upgrade().is_some_and(|entry| {
                    entry
                        .window()
                        .messages
                        .front()
                        .is_some_and(|front| front.seq() <= *seq)
                })
            });
        }
    }

    fn removed(&mut self, message: Option<&Message>) {
        if let Some(message) = message {
            self.bytes -= message.data().len();
            self.messages -= 1;
        }
    }
}

/// A publish in progress (see [`Feed::publishing`]). Dropped when the
/// append returned, or when the publish was abandoned: either way it hands
/// over whatever is caught.
pub(crate) struct Publishing<'a>(&'a Feed);

impl Drop for Publishing<'_> {
    fn drop(&mut self) {
        // Leave first, then look: a commit that found this publish still
        // counted put its polls in the list before this look (see
        // `Feed::committed`).
        self.0.publishing.fetch_sub(1, Ordering::SeqCst);
        self.0.deliver_caught();
    }
}

/// One followed channel.
pub(crate) struct ChannelEntry {
    /// Subscriptions following it; changed only under the feed's write lock.
    subscribers: AtomicUsize,
    window: Mutex<LiveWindow>,
    /// Woken after each message appended to the window.
    pub(crate) notify: Notify,
    /// Parked polls waiting for this channel's next message.
    parked: Mutex<ParkedList>,
    /// Its followers' progress, for publish back-pressure.
    pub(crate) pace: ChannelPace,
    /// Its caught-up streams, written in one pass (see `crate::group`).
    pub(crate) group: Group,
}

/// The newest messages of one channel, contiguous in the channel's order.
pub(crate) struct LiveWindow {
    /// Every message of the channel with a greater sequence number that the
    /// feed announced is in `messages`.
    pub(crate) base: Seq,
    pub(crate) messages: VecDeque<Arc<Message>>,
}

impl LiveWindow {
    /// Removes the oldest message: whoever reads from before it reads the
    /// store.
    fn pop_oldest(&mut self) -> Option<Arc<Message>> {
        let oldest = self.messages.pop_front()?;
        self.base = oldest.seq();
        Some(oldest)
    }

    /// Up to `limit` messages with `after < seq <= upto`, or `None` when the
    /// window no longer reaches back to `after`.
    pub(crate) fn read(&self, after: Seq, upto: Seq, limit: usize) -> Option<Vec<Arc<Message>>> {
        if after < self.base {
            return None;
        }
        let start = self.messages.partition_point(|m| m.seq() <= after);
        Some(
            self.messages
                .range(start..)
                .take_while(|m| m.seq() <= upto)
                .take(limit)
                .cloned()
                .collect(),
        )
    }
}

impl ChannelEntry {
    pub(crate) fn window(&self) -> MutexGuard<'_, LiveWindow> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn parked(&self) -> MutexGuard<'_, ParkedList> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Feed {
    pub(crate) fn new(
        epoch: Epoch,
        head: Seq,
        live_window: usize,
        live_window_bytes: usize,
    ) -> Self {
        Self {
            channels: RwLock::new(HashMap::new()),
            watermark: AtomicU64::new(head.0),
            epoch: RwLock::new(epoch),
            generation: AtomicU64::new(0),
            live_window,
            live_bytes: Mutex::new(LiveBytes {
                limit: live_window_bytes,
                bytes: 0,
                messages: 0,
                order: VecDeque::new(),
            }),
            caught: Mutex::new(Vec::new()),
            publishing: AtomicUsize::new(0),
        }
    }

    /// The newest sequence number announced. Everything at or below it is
    /// readable (see the module invariant).
    pub(crate) fn watermark(&self) -> Seq {
        Seq(self.watermark.load(Ordering::Acquire))
    }

    /// The history announced now.
    pub(crate) fn epoch(&self) -> Epoch {
        self.epoch.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Which history the feed announces: it changes with the history, and
    /// is odd while the change is being made (see the module docs).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Starts following `channels` for one more subscriber each, whose
    /// reads `progress` records.
    pub(crate) fn follow(
        &self,
        channels: &[ChannelName],
        progress: &Arc<Progress>,
    ) -> Vec<Arc<ChannelEntry>> {
        let mut map = self.channels.write().unwrap_or_else(|e| e.into_inner());
        let base = self.watermark();
        channels
            .iter()
            .map(|name| {
                let entry = map.entry(name.clone()).or_insert_with(|| {
                    Arc::new(ChannelEntry {
                        subscribers: AtomicUsize::new(0),
                        window: Mutex::new(LiveWindow {
                            base,
                            messages: VecDeque::new(),
                        }),
                        notify: Notify::new(),
                        parked: Mutex::new(ParkedList::default()),
                        pace: ChannelPace::default(),
                        group: Group::default(),
                    })
                });
                entry.subscribers.fetch_add(1, Ordering::Relaxed);
                entry.pace.follow(progress);
                entry.clone()
            })
            .collect()
    }

    /// Stops following `channels` for one subscriber each; a channel nobody
    /// follows any more loses its live window (emptied here, so the bytes
    /// it held are counted off once, whoever still holds the entry).
    pub(crate) fn unfollow(&self, channels: &[ChannelName], progress: &Arc<Progress>) {
        let mut map = self.channels.write().unwrap_or_else(|e| e.into_inner());
        for name in channels {
            let Some(entry) = map.get(name) else {
                continue;
            };
            entry.pace.unfollow(progress);
            if entry.subscribers.fetch_sub(1, Ordering::Relaxed) == 1 {
                let removed = std::mem::take(&mut entry.window().messages);
                let mut live = self.live_bytes();
                for message in &removed {
                    live.removed(Some(message));
                }
                map.remove(name);
            }
        }
    }

    /// Empties every window and starts it after `base`: whatever a
    /// subscriber reads up to there comes from the store.
    fn rebase(&self, map: &HashMap<ChannelName, Arc<ChannelEntry>>, base: Seq) {
        let mut live = self.live_bytes();
        for entry in map.values() {
            let mut window = entry.window();
            for message in std::mem::take(&mut window.messages) {
                live.removed(Some(&message));
            }
            window.base = base;
        }
        live.order.clear();
    }

    /// Wakes every subscriber and lets every parked poll go with nothing
    /// caught, so that each reads again.
    fn wake_everyone(&self, map: &HashMap<ChannelName, Arc<ChannelEntry>>) {
        for entry in map.values() {
            entry.notify.notify_waiters();
            let released = entry.parked().withdraw_all();
            for slot in released {
                slot.catch.wake();
            }
        }
    }

    fn live_bytes(&self) -> MutexGuard<'_, LiveBytes> {
        self.live_bytes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes of message data the live windows hold now.
    pub(crate) fn live_window_bytes(&self) -> usize {
        self.live_bytes().bytes
    }

    /// Waits, before a publish to `channel`, for its live subscribers to
    /// be within `config` (see `crate::pace`). True if it waited.
    pub(crate) async fn pace(
        &self,
        channel: &ChannelName,
        config: PaceConfig,
        stats: &HubStats,
    ) -> bool {
        if config.max_lag == 0 {
            return false;
        }
        let entry = {
            let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
            map.get(channel).cloned()
        };
        match entry {
            Some(entry) => entry.pace.wait(&entry, config, stats).await,
            None => false,
        }
    }

    /// True if a publish to `channel` need not wait for its subscribers
    /// (see [`ChannelPace::holds_nobody`]).
    pub(crate) fn pace_holds_nobody(&self, channel: &ChannelName, config: PaceConfig) -> bool {
        if config.max_lag == 0 {
            return true;
        }
        let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
        map.get(channel)
            .is_none_or(|entry| entry.pace.holds_nobody(entry, config))
    }

    /// Hands every grouped stream of every channel back to its own task.
    pub(crate) fn hand_back_grouped(&self) {
        let entries: Vec<Arc<ChannelEntry>> = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for entry in entries {
            entry.group.hand_back_all();
        }
    }

    pub(crate) fn subscriber_count(&self, channel: &ChannelName) -> usize {
        let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
        map.get(channel)
            .map_or(0, |entry| entry.subscribers.load(Ordering::Relaxed))
    }

    /// Counts a publish until the guard is dropped; a commit while any is
    /// counted leaves the waking of caught polls to the publisher.
    pub(crate) fn publishing(&self) -> Publishing<'_> {
        self.publishing.fetch_add(1, Ordering::SeqCst);
        Publishing(self)
    }

    /// Hands every caught poll its message and wakes it (see
    /// `crate::park`).
    fn deliver_caught(&self) {
        let caught = std::mem::take(&mut *self.caught.lock().unwrap_or_else(|e| e.into_inner()));
        for slot in caught {
            if let Some(message) = slot.caught() {
                slot.catch.deliver(&message);
            }
            slot.catch.wake();
        }
    }

    /// Every followed channel with its subscribers on this hub.
    pub(crate) fn subscriber_counts(&self) -> Vec<(ChannelName, u64)> {
        let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(name, entry)| {
                (
                    name.clone(),
                    entry.subscribers.load(Ordering::Relaxed) as u64,
                )
            })
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    pub(crate) fn followed_channels(&self) -> usize {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

impl CommitListener for Feed {
    fn committed(&self, message: &Arc<Message>) {
        let seq = message.seq();
        // Store order is delivery order: a message at or below the
        // watermark was announced already (a store replaying after a
        // reconnection) or breaks the order. Either way it is not
        // delivered again, and the watermark never goes back.
        let announced = self.watermark();
        if seq <= announced {
            tracing::error!(
                seq = seq.0,
                watermark = announced.0,
                "the store announced a message out of order; it is not delivered again"
            );
            return;
        }
        let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
        let entry = map.get(message.channel());
        if let Some(entry) = entry {
            let mut evicted = Vec::new();
            {
                let mut window = entry.window();
                window.messages.push_back(message.clone());
                while window.messages.len() > self.live_window {
                    evicted.extend(window.pop_oldest());
                }
            }
            let mut live = self.live_bytes();
            for message in &evicted {
                live.removed(Some(message));
            }
            live.added(message, entry);
        }
        self.watermark.fetch_max(seq.0, Ordering::Release);
        if let Some(entry) = entry {
            entry.notify.notify_waiters();
            // A poll that parked after the watermark was raised saw it
            // (parking takes this lock before it looks), so no poll is
            // left waiting for a message it missed.
            let mut parked = entry.parked();
            if !parked.is_empty() {
                let mut caught = self.caught.lock().unwrap_or_else(|e| e.into_inner());
                let before = caught.len();
                parked.release(message, &mut caught);
                // Looked at after the polls are in the list, under its
                // lock: a publish that leaves later takes them out.
                if self.publishing.load(Ordering::SeqCst) == 0 {
                    for slot in &caught[before..] {
                        slot.catch.wake();
                    }
                }
            }
        }
    }

    fn skipped_to(&self, seq: Seq) {
        let map = self.channels.write().unwrap_or_else(|e| e.into_inner());
        if seq <= self.watermark() {
            return;
        }
        // Windows first, then the watermark: a subscriber that sees the
        // new watermark finds the windows starting after the skip.
        self.rebase(&map, seq);
        self.watermark.store(seq.0, Ordering::Release);
        self.wake_everyone(&map);
    }

    fn epoch_changed(&self, epoch: Epoch) {
        let map = self.channels.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        *self.epoch.write().unwrap_or_else(|e| e.into_inner()) = epoch;
        self.rebase(&map, Seq::ZERO);
        self.watermark.store(0, Ordering::Release);
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.wake_everyone(&map);
    }
}
