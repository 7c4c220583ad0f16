//! Following the shared log: every node hears of every message, in
//! sequence order, whichever node published it.
//!
//! One task per node reads `P:log` with `XREAD BLOCK` on a connection of
//! its own (a blocking read would hold up every command multiplexed behind
//! it), from the last position it announced, and tells the listener of
//! each message in order. A publish on this node waits until the feed has
//! passed its message ([`Feed::reached`]), so its listener heard of it
//! before the publish returns, as on the other stores. A read that fails
//! (Redis restarted, the connection dropped) is retried on a new
//! connection from the same position: nothing is skipped or repeated.
//!
//! Two things make it tell its listener more than messages. A node that
//! fell behind by more than the log holds finds a hole: it skips to the
//! log's start (`CommitListener::skipped_to`), and its subscribers read
//! what it skipped from each channel's history, which is exact (or a
//! `trimmed` gap where retention removed messages). And when the history in
//! Redis is another one (Redis lost its data and a node made a new one, or
//! this feed makes it), it moves to that history
//! (`CommitListener::epoch_changed`: every subscription gets a `reset` gap)
//! and follows its log from the start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use comet_protocol::{ChannelName, Data, Epoch, EventType, Message, Seq};
use comet_store::{Clock, CommitListener, StoreError, SystemClock, new_epoch};
use redis::streams::StreamReadReply;
use tokio::sync::watch;

/// Most messages one read of the log takes.
const READ_COUNT: usize = 1024;

/// How long one read waits for a message (then it asks again).
const BLOCK_MS: u64 = 1000;

/// How long beyond its block time a read may take before the connection is
/// counted as lost.
const RESPONSE_MARGIN: Duration = Duration::from_secs(5);

/// The wait before reconnecting after a failed read.
const RETRY_DELAY: Duration = Duration::from_millis(100);

/// Where the feed stands: the history it follows and the newest message
/// it announced in it.
#[derive(Clone, Debug)]
struct Position {
    epoch: Epoch,
    head: Seq,
}

/// What the feed announced, and to whom.
pub(crate) struct Feed {
    position: watch::Sender<Position>,
    listener: Mutex<Option<Arc<dyn CommitListener>>>,
    /// Figures for operators.
    pub(crate) figures: Figures,
}

/// What the feed measures.
#[derive(Default)]
pub(crate) struct Figures {
    /// Messages in Redis this node had not announced, at the last look.
    pub(crate) lag: AtomicU64,
    /// How long ago the newest message announced was published, when
    /// more were waiting at the last look (0 when none was).
    pub(crate) lag_ms: AtomicU64,
    /// The last round trip to Redis, in microseconds.
    pub(crate) round_trip_us: AtomicU64,
    /// Reads of the log that failed (the connection is made again).
    pub(crate) reconnects: AtomicU64,
    /// Moves to another history.
    pub(crate) epoch_resets: AtomicU64,
    /// Skips over a hole in the log.
    pub(crate) skips: AtomicU64,
}

impl Feed {
    pub(crate) fn new(epoch: Epoch, head: Seq) -> Self {
        Self {
            position: watch::Sender::new(Position { epoch, head }),
            listener: Mutex::new(None),
            figures: Figures::default(),
        }
    }

    /// The history followed now.
    pub(crate) fn epoch(&self) -> Epoch {
        self.position.borrow().epoch.clone()
    }

    /// The newest message announced.
    pub(crate) fn head(&self) -> Seq {
        self.position.borrow().head
    }

    pub(crate) fn set_listener(&self, listener: Arc<dyn CommitListener>) {
        *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(listener);
    }

    fn listener(&self) -> Option<Arc<dyn CommitListener>> {
        self.listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the feed announced `seq` of `epoch`. Fails if that
    /// takes longer than `limit`, or if the feed moved to another history
    /// first (Redis lost the message).
    pub(crate) async fn reached(
        &self,
        epoch: &Epoch,
        seq: Seq,
        limit: Duration,
    ) -> Result<(), StoreError> {
        let mut position = self.position.subscribe();
        let waited = tokio::time::timeout(
            limit,
            position.wait_for(|position| position.epoch != *epoch || position.head >= seq),
        )
        .await;
        match waited {
            Ok(Ok(position)) if position.epoch == *epoch => Ok(()),
            Ok(_) => Err(StoreError::Unavailable(format!(
                "message {seq} was stored in Redis, which then lost its data before this node's \
                 feed reached it"
            ))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "message {seq} is stored in Redis, but this node's feed did not reach it within \
                 {limit:?}"
            ))),
        }
    }

    /// Announces one message of the log (skipping one announced already).
    fn announce(&self, message: &Arc<Message>) {
        if message.seq() <= self.head() {
            return;
        }
        if let Some(listener) = self.listener() {
            listener.committed(message);
        }
        self.position
            .send_modify(|position| position.head = message.seq());
    }

    /// Moves on to `seq` without announcing what lies before it.
    fn skip_to(&self, seq: Seq) {
        self.figures.skips.fetch_add(1, Ordering::Relaxed);
        if let Some(listener) = self.listener() {
            listener.skipped_to(seq);
        }
        self.position.send_modify(|position| position.head = seq);
    }

    /// Moves to the history `epoch`, from its start.
    fn change_history(&self, epoch: Epoch) {
        self.figures.epoch_resets.fetch_add(1, Ordering::Relaxed);
        if let Some(listener) = self.listener() {
            listener.epoch_changed(epoch.clone());
        }
        self.position.send_replace(Position {
            epoch,
            head: Seq::ZERO,
        });
    }
}

/// Follows the log of the history under `prefix` until the task is
/// aborted, moving to another history when the one in Redis changes
/// (`open` makes one if Redis has none).
pub(crate) async fn follow(
    client: redis::Client,
    prefix: String,
    open: redis::Script,
    feed: Arc<Feed>,
) {
    let key = format!("{prefix}:log");
    let meta = format!("{prefix}:meta");
    let mut connection = None;
    loop {
        let live = match connection.take() {
            Some(live) => live,
            None => match client
                .get_multiplexed_async_connection_with_config(
                    &redis::AsyncConnectionConfig::new().set_response_timeout(Some(
                        Duration::from_millis(BLOCK_MS) + RESPONSE_MARGIN,
                    )),
                )
                .await
            {
                Ok(fresh) => fresh,
                Err(error) => {
                    tracing::warn!(%error, "the feed cannot reach Redis; trying again");
                    tokio::time::sleep(RETRY_DELAY).await;
                    continue;
                }
            },
        };
        let mut live = live;
        let Position { epoch, head: from } = feed.position.borrow().clone();
        let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(BLOCK_MS)
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("STREAMS")
            .arg(&key)
            .arg(format!("{from}-0"))
            .query_async(&mut live)
            .await;
        // What was read belongs to this history only if the history is
        // still this one after the read. The same look gives Redis's head
        // (for the lag) and a round trip.
        let looked = match read {
            Ok(read) => {
                let asked = Instant::now();
                let looked: redis::RedisResult<(Option<String>, Option<u64>)> = redis::cmd("HMGET")
                    .arg(&meta)
                    .arg("epoch")
                    .arg("seq")
                    .query_async(&mut live)
                    .await;
                let round_trip = asked.elapsed().as_micros() as u64;
                feed.figures
                    .round_trip_us
                    .store(round_trip, Ordering::Relaxed);
                looked.map(|looked| (read, looked))
            }
            Err(error) => Err(error),
        };
        let (read, (current, redis_head)) = match looked {
            Ok(looked) => looked,
            Err(error) => {
                feed.figures.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "reading the shared log failed; reconnecting");
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
        };
        if current.as_deref() != Some(epoch.as_str()) {
            if let Err(error) =
                move_to_current_history(&feed, &mut live, &prefix, &open, &epoch, current).await
            {
                tracing::warn!(%error, "moving to the history in Redis failed; trying again");
                tokio::time::sleep(RETRY_DELAY).await;
            }
            connection = Some(live);
            continue;
        }
        let mut newest_published_at = None;
        for entry in read.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            match message_of(&epoch, &entry) {
                Ok(message) => {
                    let before = Seq(message.seq().0 - 1);
                    if before > feed.head() {
                        // Every stored message has its entry: a hole means
                        // the log was trimmed past this node's position.
                        tracing::warn!(
                            announced = feed.head().0,
                            log_starts_after = before.0,
                            "this node fell behind the shared log by more than its length; its \
                             subscribers read what it skipped from each channel's history"
                        );
                        feed.skip_to(before);
                    }
                    feed.announce(&message);
                    newest_published_at = Some(message.published_at_ms());
                }
                Err(error) => {
                    tracing::error!(id = %entry.id, %error, "an entry of the shared log is not a message");
                }
            }
        }
        if let Some(redis_head) = redis_head {
            let lag = redis_head.saturating_sub(feed.head().0);
            feed.figures.lag.store(lag, Ordering::Relaxed);
            let lag_ms = match newest_published_at {
                Some(published_at) if lag > 0 => SystemClock.now_ms().saturating_sub(published_at),
                _ => 0,
            };
            feed.figures.lag_ms.store(lag_ms, Ordering::Relaxed);
        }
        connection = Some(live);
    }
}

/// The history in Redis is no longer `epoch`: moves the feed to the one
/// there, `current`, making one if Redis has none (several nodes racing to
/// make it agree on one: the script makes it only where there is none).
async fn move_to_current_history(
    feed: &Feed,
    connection: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    open: &redis::Script,
    epoch: &Epoch,
    current: Option<String>,
) -> Result<(), String> {
    let current = match current {
        Some(current) => current,
        None => {
            let opened: Vec<redis::Value> = open
                .key(prefix)
                .arg(prefix)
                .arg(new_epoch().as_str())
                .invoke_async(connection)
                .await
                .map_err(|error| error.to_string())?;
            match opened.first() {
                Some(redis::Value::BulkString(bytes)) => {
                    String::from_utf8_lossy(bytes).into_owned()
                }
                other => return Err(format!("the open script answered {other:?}")),
            }
        }
    };
    let Ok(current) = Epoch::new(&current) else {
        return Err(format!(
            "the history in Redis has an epoch Comet did not make: {current:?}"
        ));
    };
    tracing::error!(
        was = %epoch,
        now = %current,
        "the history in Redis was replaced (Redis lost its data): every subscriber is told \
         with a reset gap, and this node serves the new history"
    );
    feed.change_history(current);
    Ok(())
}

fn message_of(epoch: &Epoch, entry: &redis::streams::StreamId) -> Result<Arc<Message>, String> {
    let seq = entry
        .id
        .split('-')
        .next()
        .and_then(|seq| seq.parse::<u64>().ok())
        .ok_or("a bad id")?;
    let text = |name: &str| -> Result<Vec<u8>, String> {
        match entry.map.get(name) {
            Some(redis::Value::BulkString(bytes)) => Ok(bytes.clone()),
            _ => Err(format!("no field {name}")),
        }
    };
    // h is "TIME CHANNEL EVENT" (a channel name has no spaces; an event
    // may); d is the data.
    let header = String::from_utf8(text("h")?).map_err(|e| e.to_string())?;
    let mut parts = header.splitn(3, ' ');
    let published_at = parts
        .next()
        .and_then(|t| t.parse().ok())
        .ok_or("a bad time")?;
    let channel = ChannelName::new(parts.next().ok_or("no channel")?).map_err(|e| e.to_string())?;
    let event = EventType::new(parts.next().ok_or("no event")?).map_err(|e| e.to_string())?;
    let data = Data::from_utf8(text("d")?.into()).map_err(|e| e.to_string())?;
    Ok(Arc::new(Message::new(
        epoch.clone(),
        Seq(seq),
        channel,
        event,
        data,
        published_at,
    )))
}
