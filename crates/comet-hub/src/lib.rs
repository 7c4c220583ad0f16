//! The hub: Comet's publish/subscribe core, with no HTTP in it.
//!
//! [`Hub::publish`] hands a message to the [`Store`]; the store numbers it,
//! keeps it, and tells the hub's feed, in store order. The feed appends it to
//! the in-memory *live window* of its channel (only channels that someone is
//! subscribed to have one) and wakes that channel's subscribers.
//! [`Hub::publish_answering`] also hands the store the publisher's answer,
//! for a store that commits on a thread of its own to write right after the
//! commit, with the rest of its group's.
//!
//! A [`Subscription`] is not a queue. It is a cursor: one store-wide position
//! and the channels it follows. When woken it reads what lies between its
//! position and the feed's *watermark* (the newest message the feed has
//! announced), from the live windows when they still hold it and from the
//! store when they no longer do. So a subscriber that falls behind costs no
//! memory: it reads history at its own pace, and, if retention removed what
//! it had not read, it is told so with a [`Gap`]. Subscribers never wait
//! for each other; a publisher's answer waits for the live ones only as
//! far as [`PaceConfig`] says (publish back-pressure, `pace.rs`), never for
//! one reading history.
//!
//! Messages are shared (`Arc<Message>`), and so are their encoded frames,
//! which [`Message`](comet_protocol::Message) computes once per transport.

mod feed;
mod group;
mod pace;
mod park;
mod stats;
mod subscription;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use comet_protocol::{ChannelList, ChannelName, Cursor, Data, Epoch, EventType, IdempotencyKey};
pub use comet_protocol::{Gap, GapReason};
use comet_store::{AfterCommit, AppendError, Appended, Draft, Retention};
pub use comet_store::{Footprint, Store, StoreError, StoreMetric};
pub use group::{Encoded, GroupWriter, Grouped, Written};
pub use pace::PaceConfig;
pub use park::{Catch, Parked};
pub use stats::{HubStats, StatsSnapshot};
pub use subscription::{BatchLimit, Item, Start, Subscription};

use crate::feed::Feed;

/// Tuning of the hub.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Messages each followed channel keeps in memory for live delivery.
    /// Subscribers further behind read from the store.
    pub live_window: usize,
    /// Bytes of message data all live windows together keep; beyond it the
    /// oldest messages of any window go first (they stay readable from the
    /// store).
    pub live_window_bytes: usize,
    /// How far publishers may run ahead of live subscribers.
    pub pace: PaceConfig,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            live_window: 256,
            live_window_bytes: 64 * 1024 * 1024,
            pace: PaceConfig::default(),
        }
    }
}

impl HubConfig {
    /// A configuration whose live window never holds more than retention
    /// keeps, so live delivery and replay agree on what "retained" means.
    pub fn within(self, retention: &Retention) -> Self {
        Self {
            live_window: self.live_window.clamp(1, retention.max_messages.max(1)),
            ..self
        }
    }
}

/// A hub failure: the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The publication at `index` reuses an idempotency key of its channel
    /// for other content: nothing was published.
    #[error("publication {index} reuses an idempotency key for other content")]
    IdempotencyConflict {
        /// Its position in the batch.
        index: usize,
    },
}

impl From<AppendError> for HubError {
    fn from(error: AppendError) -> Self {
        match error {
            AppendError::Store(error) => Self::Store(error),
            AppendError::IdempotencyConflict { index } => Self::IdempotencyConflict { index },
        }
    }
}

/// One message to publish.
#[derive(Clone, Debug)]
pub struct Publication {
    /// Its channel.
    pub channel: ChannelName,
    /// Its event type.
    pub event: EventType,
    /// Its data.
    pub data: Data,
    /// Its idempotency key, if the publisher gave one.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl Publication {
    /// A publication without an idempotency key.
    pub fn new(channel: ChannelName, event: EventType, data: Data) -> Self {
        Self {
            channel,
            event,
            data,
            idempotency_key: None,
        }
    }
}

/// The result of one publication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The message's id (for a repeat, the original's).
    pub id: Cursor,
    /// Subscribers to its channel when it was published: on this hub, and
    /// on the other nodes of a shared store (for a repeat, as the original
    /// reported).
    pub subscribers: usize,
    /// True when this was a repeat of an earlier publication with the same
    /// idempotency key and content: nothing new was stored.
    pub repeat: bool,
}

/// What the hub knows of one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Subscribers on this hub now, and on the other nodes of a shared
    /// store as of their last share.
    pub subscribers: usize,
    /// Messages retained.
    pub retained: u64,
    /// The newest message's id.
    pub last_id: Cursor,
}

/// What a publication became: its message, or, for a repeat, the
/// original's id and subscribers.
fn published_of(appended: Appended, subscribers: usize, epoch: &Epoch) -> Published {
    match appended {
        Appended::Stored(message) => Published {
            id: message.cursor(),
            subscribers,
            repeat: false,
        },
        Appended::Repeat(original) => Published {
            id: Cursor::new(epoch.clone(), original.seq),
            subscribers: original.subscribers as usize,
            repeat: true,
        },
    }
}

/// The publish/subscribe core. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn Store>,
    feed: Arc<Feed>,
    stats: Arc<HubStats>,
    pace: PaceConfig,
}

impl Hub {
    /// A hub over `store`. It becomes the store's commit listener.
    pub fn new(store: Arc<dyn Store>, config: HubConfig) -> Self {
        let stats = Arc::new(HubStats::default());
        let feed = Arc::new(Feed::new(
            store.epoch(),
            store.head(),
            config.live_window.max(1),
            config.live_window_bytes,
        ));
        store.set_commit_listener(feed.clone());
        Self {
            shared: Arc::new(Shared {
                store,
                feed,
                stats,
                pace: config.pace,
            }),
        }
    }

    /// Stores a message and delivers it to the channel's subscribers; the
    /// answer may wait for them (publish back-pressure, [`PaceConfig`]).
    pub async fn publish(
        &self,
        channel: &ChannelName,
        event: EventType,
        data: Data,
    ) -> Result<Published, HubError> {
        let subscribers = self.subscriber_count(channel);
        let publishing = self.shared.feed.publishing();
        let appended = self.shared.store.append(channel, event, data).await;
        // Answer the long polls this publish (or one before it) caught,
        // before anything else gets to run.
        drop(publishing);
        let message = appended?;
        self.pace(std::slice::from_ref(channel)).await;
        self.shared.stats.record_published(1, 0);
        Ok(Published {
            id: message.cursor(),
            subscribers,
            repeat: false,
        })
    }

    /// True if the store commits on a thread of its own, where
    /// [`publish_answering`](Hub::publish_answering) answers each publish
    /// right after its commit, a whole group in one pass.
    pub fn answers_at_commit(&self) -> bool {
        self.shared.store.runs_after_commit_at_commit()
    }

    /// Publishes `publication` as [`publish_batch`](Hub::publish_batch)
    /// publishes one, and gives `answer` the outcome as soon as it is
    /// stored and announced, before this returns: on a store that commits
    /// on a thread of its own ([`answers_at_commit`](Hub::answers_at_commit)),
    /// there, so a publisher's answer need not wait for its task to run
    /// again (`answer` must then be short and must not block). If publish
    /// back-pressure may have to hold the answer, or the append fails,
    /// `answer` is dropped uncalled, and this returns as `publish_batch`
    /// would. What `answer` returned comes back if it was called.
    pub async fn publish_answering<T: Send + 'static>(
        &self,
        publication: Publication,
        answer: impl FnOnce(&Published) -> T + Send + 'static,
    ) -> Result<(Published, Option<T>), HubError> {
        let channel = publication.channel.clone();
        let subscribers = self.subscriber_count(&channel);
        let draft = Draft {
            subscribers: subscribers as u64,
            idempotency_key: publication.idempotency_key,
            ..Draft::new(publication.channel, publication.event, publication.data)
        };
        let answered = Arc::new(Mutex::new(None));
        let after_commit =
            self.answer_after_commit(answer, channel.clone(), subscribers, &answered);
        let publishing = self.shared.feed.publishing();
        let appended = self
            .shared
            .store
            .append_batch_then(vec![draft], after_commit)
            .await;
        // Answer the long polls this publish (or one before it) caught,
        // before anything else gets to run.
        drop(publishing);
        let Some(appended) = appended?.pop() else {
            return Err(HubError::Store(StoreError::Unavailable(
                "the store said nothing of a publication".into(),
            )));
        };
        let answered = answered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if answered.is_none() {
            self.pace(std::slice::from_ref(&channel)).await;
        }
        let published = published_of(appended, subscribers, &self.shared.feed.epoch());
        let repeats = u64::from(published.repeat);
        self.shared.stats.record_published(1 - repeats, repeats);
        Ok((published, answered))
    }

    /// The store's work after the commit for [`publish_answering`]: give
    /// `answer` the outcome unless back-pressure may hold it, and keep what
    /// it returns in `answered`.
    ///
    /// [`publish_answering`]: Hub::publish_answering
    fn answer_after_commit<T: Send + 'static>(
        &self,
        answer: impl FnOnce(&Published) -> T + Send + 'static,
        channel: ChannelName,
        subscribers: usize,
        answered: &Arc<Mutex<Option<T>>>,
    ) -> AfterCommit {
        let feed = self.shared.feed.clone();
        let pace = self.shared.pace;
        let answered = answered.clone();
        Box::new(move |appended: &[Appended]| {
            let [appended] = appended else { return };
            if !feed.pace_holds_nobody(&channel, pace) {
                return;
            }
            let answer = answer(&published_of(appended.clone(), subscribers, &feed.epoch()));
            *answered.lock().unwrap_or_else(PoisonError::into_inner) = Some(answer);
        })
    }

    /// Stores `publications` together, in order, all or nothing, and
    /// delivers them; the results are in the same order. A publication
    /// whose idempotency key its channel stored with the same content
    /// within the window is a repeat (nothing stored, the original's id);
    /// with other content nothing is published
    /// ([`HubError::IdempotencyConflict`]).
    pub async fn publish_batch(
        &self,
        publications: Vec<Publication>,
    ) -> Result<Vec<Published>, HubError> {
        let feed = &self.shared.feed;
        let mut channels: Vec<ChannelName> = publications
            .iter()
            .map(|publication| publication.channel.clone())
            .collect();
        channels.sort();
        channels.dedup();
        let drafts: Vec<Draft> = publications
            .into_iter()
            .map(|publication| Draft {
                subscribers: self.subscriber_count(&publication.channel) as u64,
                channel: publication.channel,
                event: publication.event,
                data: publication.data,
                idempotency_key: publication.idempotency_key,
            })
            .collect();
        let subscribers: Vec<usize> = drafts.iter().map(|d| d.subscribers as usize).collect();
        let publishing = feed.publishing();
        let appended = self.shared.store.append_batch(drafts).await;
        // Answer the long polls this publish (or one before it) caught,
        // before anything else gets to run.
        drop(publishing);
        let appended = appended?;
        self.pace(&channels).await;
        let epoch = self.shared.feed.epoch();
        let mut repeats = 0;
        let published: Vec<Published> = appended
            .into_iter()
            .zip(subscribers)
            .map(|(appended, subscribers)| published_of(appended, subscribers, &epoch))
            .inspect(|published| repeats += u64::from(published.repeat))
            .collect();
        let stored = published.len() as u64 - repeats;
        self.shared.stats.record_published(stored, repeats);
        Ok(published)
    }

    /// Starts a subscription to `channels` from `start`.
    pub async fn subscribe(
        &self,
        channels: &ChannelList,
        start: Start,
    ) -> Result<Subscription, HubError> {
        Subscription::open(self.shared.clone(), channels, start).await
    }

    /// The channel's retained count, newest id and local subscribers; `None`
    /// if it never had a message.
    pub async fn channel_info(
        &self,
        channel: &ChannelName,
    ) -> Result<Option<ChannelInfo>, HubError> {
        let summary = self.shared.store.summary(channel).await?;
        Ok(summary.map(|summary| ChannelInfo {
            subscribers: self.subscriber_count(channel),
            retained: summary.retained,
            last_id: summary.last_id,
        }))
    }

    /// Channels in name order after `after`, at most `limit`, with their
    /// local subscribers.
    pub async fn channels(
        &self,
        after: Option<&ChannelName>,
        limit: usize,
    ) -> Result<Vec<(ChannelName, ChannelInfo)>, HubError> {
        let listed = self.shared.store.channels(after, limit).await?;
        Ok(listed
            .into_iter()
            .map(|(name, summary)| {
                let info = ChannelInfo {
                    subscribers: self.subscriber_count(&name),
                    retained: summary.retained,
                    last_id: summary.last_id,
                };
                (name, info)
            })
            .collect())
    }

    /// Waits, after a publish was stored, for the live subscribers of
    /// `channels` to be within the configured lag (see [`PaceConfig`]),
    /// counting the publishes that waited.
    async fn pace(&self, channels: &[ChannelName]) {
        let mut waited = false;
        for channel in channels {
            waited |= self
                .shared
                .feed
                .pace(channel, self.shared.pace, &self.shared.stats)
                .await;
        }
        if waited {
            self.shared.stats.record_paced();
        }
    }

    /// Hands every grouped stream (see `group`) back to its own task,
    /// which then carries on the usual way and may join again: for a
    /// transport whose rules for its streams changed, so that every task
    /// looks at its stream.
    pub fn hand_back_grouped(&self) {
        self.shared.feed.hand_back_grouped();
    }

    /// Subscribers of `channel` on this hub and, with a store shared by
    /// several nodes, on the others (as of their last share).
    pub fn subscriber_count(&self, channel: &ChannelName) -> usize {
        self.shared.feed.subscriber_count(channel)
            + self.shared.store.subscribers_elsewhere(channel) as usize
    }

    /// Shares this hub's subscriber counts with the other nodes of a shared
    /// store every `interval`, forever (a store of one node ignores them).
    /// Spawn it.
    pub async fn share_subscribers_every(&self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let counts = self.shared.feed.subscriber_counts();
            if let Err(error) = self.shared.store.share_subscribers(counts).await {
                tracing::warn!(%error, "sharing subscriber counts failed");
            }
        }
    }

    /// A cursor at the newest message announced so far: "now".
    pub fn now(&self) -> Cursor {
        Cursor::new(self.shared.feed.epoch(), self.shared.feed.watermark())
    }

    /// The epoch of the history behind this hub (a shared store may move
    /// to another while running).
    pub fn epoch(&self) -> Epoch {
        self.shared.feed.epoch()
    }

    /// Counters for metrics.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Channels with at least one subscriber on this hub.
    pub fn followed_channels(&self) -> usize {
        self.shared.feed.followed_channels()
    }

    /// Bytes of message data the live windows hold (bounded by
    /// [`HubConfig::live_window_bytes`]).
    pub fn live_window_bytes(&self) -> usize {
        self.shared.feed.live_window_bytes()
    }

    /// The store's own figures for operators.
    pub fn store_metrics(&self) -> Vec<StoreMetric> {
        self.shared.store.metrics()
    }

    /// What the store holds.
    pub fn store_footprint(&self) -> Footprint {
        self.shared.store.footprint()
    }

    /// Succeeds when the store can accept and serve messages.
    pub async fn check_health(&self) -> Result<(), HubError> {
        Ok(self.shared.store.check_health().await?)
    }

    /// Applies retention by age every `interval`, forever. Spawn it.
    pub async fn enforce_retention_every(&self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(error) = self.shared.store.enforce_retention().await {
                tracing::warn!(%error, "retention sweep failed");
            }
        }
    }
}
