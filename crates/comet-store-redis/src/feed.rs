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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use comet_protocol::{ChannelName, Data, Epoch, EventType, Message, Seq};
use comet_store::{CommitListener, StoreError};
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

/// What the feed announced, and to whom.
pub(crate) struct Feed {
    head: watch::Sender<Seq>,
    listener: Mutex<Option<Arc<dyn CommitListener>>>,
    /// Set when the history in Redis is no longer the one this node
    /// serves: the feed stopped, and says why.
    lost: std::sync::OnceLock<String>,
    /// Figures for operators.
    pub(crate) figures: Figures,
}

/// What the feed measures.
#[derive(Default)]
pub(crate) struct Figures {
    /// Messages in Redis this node had not announced, at the last look.
    pub(crate) lag: AtomicU64,
    /// The last round trip to Redis, in microseconds.
    pub(crate) round_trip_us: AtomicU64,
    /// Reads of the log that failed (the connection is made again).
    pub(crate) reconnects: AtomicU64,
}

impl Feed {
    pub(crate) fn new(head: Seq) -> Self {
        Self {
            head: watch::Sender::new(head),
            listener: Mutex::new(None),
            lost: std::sync::OnceLock::new(),
            figures: Figures::default(),
        }
    }

    /// Why the feed stopped, if it did.
    pub(crate) fn lost(&self) -> Option<&str> {
        self.lost.get().map(String::as_str)
    }

    /// The newest message announced.
    pub(crate) fn head(&self) -> Seq {
        *self.head.borrow()
    }

    pub(crate) fn set_listener(&self, listener: Arc<dyn CommitListener>) {
        *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(listener);
    }

    /// Waits until the feed announced `seq`.
    pub(crate) async fn reached(&self, seq: Seq, limit: Duration) -> Result<(), StoreError> {
        let mut head = self.head.subscribe();
        match tokio::time::timeout(limit, head.wait_for(|head| *head >= seq)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(StoreError::Unavailable(format!(
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
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(listener) = listener {
            listener.committed(message);
        }
        self.head.send_replace(message.seq());
    }
}

/// Follows the log of the history under `prefix` until the task is
/// aborted, or until it can no longer announce every message in order:
/// the history in Redis is no longer `epoch` (Redis lost its data, or
/// another history took its place), or the log was trimmed past this
/// node's position (it fell behind by more than the log's length). Then
/// it stops, so that nothing is delivered out of place, and says why (the
/// node reports itself unhealthy).
pub(crate) async fn follow(client: redis::Client, prefix: String, epoch: Epoch, feed: Arc<Feed>) {
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
        let from = feed.head();
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
        let asked = Instant::now();
        let looked: redis::RedisResult<(Option<String>, Option<u64>)> = match &read {
            Ok(_) => {
                redis::cmd("HMGET")
                    .arg(&meta)
                    .arg("epoch")
                    .arg("seq")
                    .query_async(&mut live)
                    .await
            }
            Err(_) => Ok((None, None)),
        };
        let redis_head = match (&read, &looked) {
            (Ok(_), Ok((_, head))) => {
                let round_trip = asked.elapsed().as_micros() as u64;
                feed.figures
                    .round_trip_us
                    .store(round_trip, Ordering::Relaxed);
                *head
            }
            _ => None,
        };
        let current = looked.map(|(epoch, _)| epoch);
        if let (Ok(_), Ok(current)) = (&read, &current)
            && current.as_deref() != Some(epoch.as_str())
        {
            let reason = format!(
                "the history in Redis is no longer the one this node serves (epoch {epoch}, now \
                 {}): Redis lost its data or was replaced. This node stopped delivering and \
                 publishing; restart it to serve the new history (its clients are told of the \
                 change with a reset gap)",
                current.as_deref().unwrap_or("none")
            );
            tracing::error!("{reason}");
            let _ = feed.lost.set(reason);
            return;
        }
        let read = match current {
            Ok(_) => read,
            Err(error) => Err(error),
        };
        match read {
            Ok(reply) => {
                for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                    match message_of(&epoch, &entry) {
                        Ok(message) => {
                            if message.seq().0 > feed.head().0 + 1 {
                                // Every stored message has its entry: a
                                // hole means the log was trimmed past
                                // this node's position, and its live
                                // windows would silently lack the
                                // missing messages.
                                let reason = format!(
                                    "this node fell behind the shared log by more than its \
                                     length (it had announced up to {}, the log now starts \
                                     after {}): it stopped delivering and publishing; restart \
                                     it (its clients resume exactly from their ids)",
                                    feed.head().0,
                                    message.seq().0 - 1
                                );
                                tracing::error!("{reason}");
                                let _ = feed.lost.set(reason);
                                return;
                            }
                            feed.announce(&message);
                        }
                        Err(error) => {
                            tracing::error!(id = %entry.id, %error, "an entry of the shared log is not a message");
                        }
                    }
                }
                if let Some(redis_head) = redis_head {
                    let lag = redis_head.saturating_sub(feed.head().0);
                    feed.figures.lag.store(lag, Ordering::Relaxed);
                }
                connection = Some(live);
            }
            Err(error) => {
                feed.figures.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "reading the shared log failed; reconnecting");
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    }
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
    let channel = String::from_utf8(text("c")?).map_err(|e| e.to_string())?;
    let channel = ChannelName::new(&channel).map_err(|e| e.to_string())?;
    let event = String::from_utf8(text("e")?).map_err(|e| e.to_string())?;
    let event = EventType::new(&event).map_err(|e| e.to_string())?;
    let data = Data::from_utf8(text("d")?.into()).map_err(|e| e.to_string())?;
    let published_at = String::from_utf8(text("t")?)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or("a bad time")?;
    Ok(Arc::new(Message::new(
        epoch.clone(),
        Seq(seq),
        channel,
        event,
        data,
        published_at,
    )))
}
