//! Comet's history in Redis, so that several nodes serve one set of
//! channels.
//!
//! One Redis holds what the durable store holds on one machine: one
//! store-wide sequence (so a cursor stays one number, valid on every node),
//! each channel's retained messages (a stream whose ids are the sequence
//! numbers), what gap detection needs of forgotten channels, idempotency
//! keys, and a log of every message in order. Every change is one Lua
//! script (`lua/`), so a publish is numbered, stored, trimmed and logged in
//! one atomic step: no node can see a number without its message, or two
//! messages in another order than their numbers.
//!
//! Every node follows the log (`feed.rs`): it tells its hub of each message
//! in sequence order, whichever node published it. A publish returns once
//! this node's feed has passed it, so the store's promise to its listener
//! (told of every message, in order, before the append that stored it
//! returns) holds on every node.
//!
//! All keys share one hash tag (`{prefix}`), so a Redis Cluster keeps them
//! in one slot: Redis gives availability here, not sharding.

mod connect;
mod feed;
mod reply;
mod scripts;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use comet_protocol::{ChannelName, Cursor, Data, Epoch, EventType, Message, Seq};
use comet_store::forgotten::folded_mark_index;
use comet_store::idempotency::{Fingerprint, KeyHash};
use comet_store::{
    AppendError, Appended, ChannelSummary, Clock, CommitListener, Draft, Footprint, History,
    IdempotencyOptions, Original, ReadLimit, Retention, SharedFootprint, Store, StoreError,
    StoreMetric, StoreOptions, new_epoch, stored_size_of,
};
use redis::aio::ConnectionManager;

use crate::connect::{check_settings, connect, without_password};
use crate::feed::Feed;
use crate::reply::Reply;
use crate::scripts::Scripts;

/// How long a command may take before it is counted as failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a publish waits for this node's feed to pass it.
const FEED_TIMEOUT: Duration = Duration::from_secs(10);

/// Most messages an age sweep removes in one script.
const SWEEP_STEP: usize = 4096;

/// Where the history lives in Redis.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]`.
    pub url: String,
    /// What every key starts with (inside a hash tag: `{comet}:…`): several
    /// histories can share one Redis under different prefixes.
    pub prefix: String,
    /// Messages the shared log keeps for nodes that fall behind.
    pub log_length: usize,
}

impl RedisOptions {
    /// The history at `url`, under the prefix `comet`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "comet".into(),
            log_length: 100_000,
        }
    }
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL: {0}")]
    Url(String),
    /// Redis could not be reached or refused the first commands.
    #[error("cannot use Redis at {url}: {error}")]
    Redis {
        /// The URL, without its password.
        url: String,
        /// What failed.
        error: String,
    },
}

/// Commands to Redis that failed, by kind.
#[derive(Default)]
struct Errors {
    /// No answer within the response timeout.
    timeouts: AtomicU64,
    /// The connection could not be made, or broke.
    connections: AtomicU64,
    /// Redis answered with an error (a script failing, out of memory, a
    /// replica refusing writes).
    answered: AtomicU64,
}

const ERRORS_HELP: &str = "Commands to Redis that failed (each answered 503 to its request), by kind: timeout (no answer within the response timeout), connection (could not connect, or the connection broke), server (Redis answered with an error).";

/// The five counters a script returns at `reply`'s position: what the
/// store holds.
fn footprint_in(reply: &mut Reply) -> Result<Footprint, StoreError> {
    Ok(Footprint {
        channels: reply.number()?,
        forgotten_channels: reply.number()?,
        messages: reply.number()?,
        bytes: reply.number()?,
        idempotency_keys: reply.number()?,
    })
}

/// A [`Store`] in Redis. See the crate documentation.
pub struct RedisStore {
    prefix: String,
    connection: ConnectionManager,
    scripts: Scripts,
    retention: Retention,
    idempotency: IdempotencyOptions,
    clock: Arc<dyn Clock>,
    log_length: usize,
    feed: Arc<Feed>,
    /// What the store holds, as of the last script that said.
    footprint: SharedFootprint,
    following: tokio::task::JoinHandle<()>,
    /// This node, among those sharing the history (random per process).
    node: String,
    /// Subscribers on the other live nodes, per channel, as of the last
    /// share.
    elsewhere: std::sync::RwLock<std::collections::HashMap<ChannelName, u64>>,
    /// Commands that failed.
    errors: Errors,
}

impl RedisStore {
    /// Connects to Redis, makes the history there if there is none (a new
    /// epoch), and starts following its log from its head.
    pub async fn open(redis: RedisOptions, options: StoreOptions) -> Result<Self, OpenError> {
        let shown = without_password(&redis.url);
        let fail = |error: redis::RedisError| OpenError::Redis {
            url: shown.clone(),
            error: error.to_string(),
        };
        let client =
            redis::Client::open(redis.url.as_str()).map_err(|e| OpenError::Url(e.to_string()))?;
        let mut connection = connect(&client, &shown).await.map_err(fail)?;
        check_settings(&mut connection, &shown).await?;
        let prefix = format!("{{{}}}", redis.prefix);
        let scripts = Scripts::new();
        let reply: Vec<redis::Value> = scripts
            .open
            .key(&prefix)
            .arg(&prefix)
            .arg(new_epoch().as_str())
            .invoke_async(&mut connection)
            .await
            .map_err(fail)?;
        let mut reply = Reply::new(reply);
        let unexpected = |error: StoreError| OpenError::Redis {
            url: shown.clone(),
            error: error.to_string(),
        };
        let epoch = reply.text().map_err(unexpected)?;
        let epoch = Epoch::new(&epoch).map_err(|_| OpenError::Redis {
            url: shown.clone(),
            error: format!("the history's epoch {epoch:?} is not one Comet made"),
        })?;
        let head = reply.number().map_err(unexpected)?;
        let footprint = SharedFootprint::default();
        footprint.store(footprint_in(&mut reply).map_err(unexpected)?);
        tracing::info!(url = %shown, epoch = %epoch, head, "history in Redis opened");
        let feed = Arc::new(Feed::new(epoch, Seq(head)));
        let following = tokio::spawn(feed::follow(
            client,
            prefix.clone(),
            scripts.open.clone(),
            feed.clone(),
        ));
        Ok(Self {
            prefix,
            connection,
            scripts,
            retention: options.retention,
            idempotency: options.idempotency,
            clock: options.clock,
            log_length: redis.log_length,
            feed,
            footprint,
            following,
            node: format!("{:016x}", rand::random::<u64>()),
            elsewhere: std::sync::RwLock::default(),
            errors: Errors::default(),
        })
    }

    /// Messages published before this are too old to keep (0: no limit).
    fn age_cutoff(&self) -> u64 {
        self.retention.max_age.map_or(0, |max_age| {
            self.clock
                .now_ms()
                .saturating_sub(max_age.as_millis() as u64)
                .max(1)
        })
    }

    /// An invocation of `script` with what every script takes first: the
    /// prefix, as its key (for the slot) and its first argument.
    fn invocation<'a>(&self, script: &'a redis::Script) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation.key(&self.prefix).arg(&self.prefix);
        invocation
    }

    /// The arguments that trim a channel as it is read (`trim_channel` in
    /// `common.lua`): the age cutoff, the count limit, the tombstones kept.
    fn channel_retention(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        invocation
            .arg(self.age_cutoff())
            .arg(self.retention.max_messages.max(1))
            .arg(self.retention.forgotten_channels);
    }

    /// Runs a script; a failure is counted and is a 503 for its request.
    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(|error| self.failed(error))
    }

    /// A command that failed: counted by kind, and a 503 for its request.
    fn failed(&self, error: redis::RedisError) -> StoreError {
        let count = if error.is_timeout() {
            &self.errors.timeouts
        } else if error.is_io_error()
            || error.is_connection_refusal()
            || error.is_connection_dropped()
        {
            &self.errors.connections
        } else {
            &self.errors.answered
        };
        count.fetch_add(1, Ordering::Relaxed);
        unavailable(error)
    }

    fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }
}

/// A message of `epoch` read back from Redis.
fn message(
    epoch: &Epoch,
    channel: &ChannelName,
    seq: u64,
    event: &str,
    data: Vec<u8>,
    published_at: u64,
) -> Result<Arc<Message>, StoreError> {
    let event = EventType::new(event).map_err(|e| corrupt(format!("event type: {e}")))?;
    let data = Data::from_utf8(data.into()).map_err(|e| corrupt(format!("data: {e}")))?;
    Ok(Arc::new(Message::new(
        epoch.clone(),
        Seq(seq),
        channel.clone(),
        event,
        data,
        published_at,
    )))
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.following.abort();
    }
}

/// A Redis failure, for the request at hand (a 503).
fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("Redis: {error}"))
}

/// Something in Redis that Comet did not write.
fn corrupt(what: String) -> StoreError {
    StoreError::Unavailable(format!("unexpected content in Redis: {what}"))
}

/// A position as a stream id: `SEQ-0`, or `+` beyond what Redis's numbers
/// hold exactly.
fn stream_id(seq: u64) -> String {
    if seq >= 1 << 53 {
        "+".to_string()
    } else {
        format!("{seq}-0")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[async_trait]
impl Store for RedisStore {
    fn epoch(&self) -> Epoch {
        self.feed.epoch()
    }

    fn head(&self) -> Seq {
        self.feed.head()
    }

    async fn confirmed_head(&self) -> Result<Seq, StoreError> {
        let head: Option<u64> = redis::cmd("HGET")
            .arg(format!("{}:meta", self.prefix))
            .arg("seq")
            .query_async(&mut self.connection())
            .await
            .map_err(|error| self.failed(error))?;
        Ok(Seq(head.unwrap_or(0)))
    }

    fn set_commit_listener(&self, listener: Arc<dyn CommitListener>) {
        self.feed.set_listener(listener);
    }

    async fn append_batch(&self, drafts: Vec<Draft>) -> Result<Vec<Appended>, AppendError> {
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now_ms();
        let epoch = self.feed.epoch();
        let mut invocation = self.invocation(&self.scripts.append);
        invocation
            .arg(epoch.as_str())
            .arg(now)
            .arg(self.retention.max_messages.max(1))
            .arg(self.age_cutoff())
            .arg(self.retention.max_bytes.unwrap_or(0))
            .arg(self.retention.forgotten_channels)
            .arg(self.log_length)
            .arg(self.idempotency.window.as_millis() as u64)
            .arg(self.idempotency.max_keys)
            .arg(drafts.len());
        for draft in &drafts {
            invocation
                .arg(draft.channel.as_str())
                .arg(folded_mark_index(&draft.channel))
                .arg(draft.event.as_str())
                .arg(&draft.data.bytes()[..])
                .arg(stored_size_of(
                    &draft.channel,
                    &draft.event,
                    draft.data.len(),
                ));
            match &draft.idempotency_key {
                Some(key) => invocation
                    .arg(hex(&KeyHash::of(&draft.channel, key).0))
                    .arg(hex(&Fingerprint::of(&draft.event, draft.data.bytes()).0)),
                None => invocation.arg("").arg(""),
            };
            invocation.arg(draft.subscribers);
        }
        let reply: Vec<redis::Value> = self.run(&invocation).await?;
        let mut reply = Reply::new(reply);
        match reply.text()?.as_str() {
            "ok" => {}
            "conflict" => {
                let index = reply.number()? as usize;
                return Err(AppendError::IdempotencyConflict { index });
            }
            "reset" => {
                let found = reply.text().unwrap_or_default();
                return Err(StoreError::Unavailable(format!(
                    "the history in Redis is not the one this node serves (epoch {epoch}, found \
                     {found:?}): Redis lost its data. Nothing was stored; this node moves to the \
                     new history within seconds"
                ))
                .into());
            }
            other => return Err(corrupt(format!("append answered {other:?}")).into()),
        }
        let mut appended = Vec::with_capacity(drafts.len());
        let mut newest = None;
        for draft in drafts {
            let result = reply.text()?;
            let mut parts = result.split(' ');
            let kind = parts.next().unwrap_or_default();
            let mut number = || {
                parts
                    .next()
                    .and_then(|part| part.parse::<u64>().ok())
                    .ok_or_else(|| corrupt(format!("append result {result:?}")))
            };
            appended.push(match kind {
                "s" => {
                    let seq = number()?;
                    newest = Some(seq);
                    Appended::Stored(Arc::new(Message::new(
                        epoch.clone(),
                        Seq(seq),
                        draft.channel,
                        draft.event,
                        draft.data,
                        now,
                    )))
                }
                "r" => Appended::Repeat(Original {
                    seq: Seq(number()?),
                    subscribers: number()?,
                }),
                _ => return Err(corrupt(format!("append result {result:?}")).into()),
            });
        }
        self.footprint.store(footprint_in(&mut reply)?);
        if let Some(newest) = newest {
            self.feed.reached(&epoch, Seq(newest), FEED_TIMEOUT).await?;
        }
        Ok(appended)
    }

    async fn read(
        &self,
        channel: &ChannelName,
        after: Seq,
        upto: Seq,
        limit: ReadLimit,
    ) -> Result<History, StoreError> {
        // Nothing to read: a range that holds nothing (`+` to `-`), for the
        // channel's mark alone.
        let (first, last, count) = if after >= upto || limit.messages == 0 {
            ("+".to_string(), "-".to_string(), 0)
        } else {
            (
                stream_id(after.0.saturating_add(1)),
                stream_id(upto.0),
                limit.messages,
            )
        };
        let mut invocation = self.invocation(&self.scripts.read);
        invocation
            .arg(channel.as_str())
            .arg(folded_mark_index(channel))
            .arg(first)
            .arg(last)
            .arg(count)
            .arg(limit.bytes.min(i64::MAX as u64));
        self.channel_retention(&mut invocation);
        let epoch = self.feed.epoch();
        invocation.arg(epoch.as_str());
        let reply: Vec<redis::Value> = self.run(&invocation).await?;
        let mut reply = Reply::new(reply);
        let trimmed_upto = Seq(reply.number()?);
        let truncated = reply.number()? == 1;
        let mut messages = Vec::new();
        while !reply.is_empty() {
            let seq = reply.number()?;
            let event = reply.text()?;
            let data = reply.bytes()?;
            let published_at = reply.number()?;
            messages.push(message(&epoch, channel, seq, &event, data, published_at)?);
        }
        Ok(History {
            messages,
            trimmed_upto,
            truncated,
        })
    }

    async fn backlog_start(
        &self,
        channel: &ChannelName,
        count: usize,
        upto: Seq,
    ) -> Result<Seq, StoreError> {
        let mut invocation = self.invocation(&self.scripts.backlog);
        invocation
            .arg(channel.as_str())
            .arg(folded_mark_index(channel))
            .arg(stream_id(upto.0))
            .arg(count);
        self.channel_retention(&mut invocation);
        invocation.arg(self.feed.epoch().as_str());
        let reply: redis::Value = self.run(&invocation).await?;
        Ok(Seq(Reply::new(vec![reply]).number()?))
    }

    async fn summary(&self, channel: &ChannelName) -> Result<Option<ChannelSummary>, StoreError> {
        let mut invocation = self.invocation(&self.scripts.summary);
        invocation.arg(channel.as_str());
        self.channel_retention(&mut invocation);
        let reply: Vec<redis::Value> = self.run(&invocation).await?;
        let mut reply = Reply::new(reply);
        if reply.is_empty() {
            return Ok(None);
        }
        Ok(Some(ChannelSummary {
            retained: reply.number()?,
            last_id: Cursor::new(self.feed.epoch(), Seq(reply.number()?)),
        }))
    }

    async fn channels(
        &self,
        after: Option<&ChannelName>,
        limit: usize,
    ) -> Result<Vec<(ChannelName, ChannelSummary)>, StoreError> {
        let mut invocation = self.invocation(&self.scripts.channels);
        invocation
            .arg(after.map_or("", |name| name.as_str()))
            .arg(limit)
            .arg(self.retention.max_messages.max(1));
        let reply: Vec<redis::Value> = self.run(&invocation).await?;
        let mut reply = Reply::new(reply);
        let mut page = Vec::new();
        let epoch = self.feed.epoch();
        while !reply.is_empty() {
            let name = reply.text()?;
            let name =
                ChannelName::new(&name).map_err(|e| corrupt(format!("channel name: {e}")))?;
            let retained = reply.number()?;
            let last = reply.number()?;
            page.push((
                name,
                ChannelSummary {
                    retained,
                    last_id: Cursor::new(epoch.clone(), Seq(last)),
                },
            ));
        }
        Ok(page)
    }

    async fn enforce_retention(&self) -> Result<(), StoreError> {
        loop {
            let mut invocation = self.invocation(&self.scripts.sweep);
            invocation
                .arg(self.age_cutoff())
                .arg(SWEEP_STEP)
                .arg(self.retention.forgotten_channels)
                .arg(self.clock.now_ms())
                .arg(self.idempotency.window.as_millis() as u64)
                .arg(self.idempotency.max_keys);
            let reply: Vec<redis::Value> = self.run(&invocation).await?;
            let mut reply = Reply::new(reply);
            let more = reply.number()? == 1;
            self.footprint.store(footprint_in(&mut reply)?);
            if !more {
                return Ok(());
            }
        }
    }

    fn footprint(&self) -> Footprint {
        self.footprint.load()
    }

    async fn share_subscribers(&self, counts: Vec<(ChannelName, u64)>) -> Result<(), StoreError> {
        let mut invocation = self.invocation(&self.scripts.share);
        invocation.arg(&self.node);
        for (channel, count) in &counts {
            invocation.arg(channel.as_str()).arg(*count);
        }
        let reply: Vec<redis::Value> = self.run(&invocation).await?;
        let mut reply = Reply::new(reply);
        let mut elsewhere = std::collections::HashMap::new();
        while !reply.is_empty() {
            let name = reply.text()?;
            let count = reply.number()?;
            if let Ok(name) = ChannelName::new(&name) {
                elsewhere.insert(name, count);
            }
        }
        *self.elsewhere.write().unwrap_or_else(|e| e.into_inner()) = elsewhere;
        Ok(())
    }

    fn metrics(&self) -> Vec<StoreMetric> {
        let figures = &self.feed.figures;
        vec![
            StoreMetric {
                name: "redis_feed_lag_messages",
                help: "Messages in Redis this node had not yet announced to its subscribers, at the feed's last look (about once a second when idle).",
                counter: false,
                label: None,
                value: figures.lag.load(Ordering::Relaxed),
            },
            StoreMetric {
                name: "redis_feed_lag_milliseconds",
                help: "How long ago the newest message this node announced was published (by the publishing node's clock), when more were waiting at the feed's last look; 0 when none was.",
                counter: false,
                label: None,
                value: figures.lag_ms.load(Ordering::Relaxed),
            },
            StoreMetric {
                name: "redis_round_trip_microseconds",
                help: "The last round trip of the feed's look at Redis.",
                counter: false,
                label: None,
                value: figures.round_trip_us.load(Ordering::Relaxed),
            },
            StoreMetric {
                name: "redis_feed_reconnects",
                help: "Reads of the shared log that failed; each makes the connection again and resumes where it stopped.",
                counter: true,
                label: None,
                value: figures.reconnects.load(Ordering::Relaxed),
            },
            StoreMetric {
                name: "redis_errors",
                help: ERRORS_HELP,
                counter: true,
                label: Some(("kind", "timeout")),
                value: self.errors.timeouts.load(Ordering::Relaxed),
            },
            StoreMetric {
                name: "redis_errors",
                help: ERRORS_HELP,
                counter: true,
                label: Some(("kind", "connection")),
                value: self.errors.connections.load(Ordering::Relaxed),
            },
            StoreMetric {
                name: "redis_errors",
                help: ERRORS_HELP,
                counter: true,
                label: Some(("kind", "server")),
                value: self.errors.answered.load(Ordering::Relaxed),
            },
            StoreMetric {
                name: "redis_epoch_resets",
                help: "Times the history in Redis was replaced under this node (Redis lost its data): every subscription was told with a reset gap and went on in the new history.",
                counter: true,
                label: None,
                value: figures.epoch_resets.load(Ordering::Relaxed),
            },
            StoreMetric {
                name: "redis_feed_skips",
                help: "Times this node fell behind the shared log by more than its length: its subscribers read what it skipped from each channel's history.",
                counter: true,
                label: None,
                value: figures.skips.load(Ordering::Relaxed),
            },
        ]
    }

    fn subscribers_elsewhere(&self, channel: &ChannelName) -> u64 {
        self.elsewhere
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(channel)
            .copied()
            .unwrap_or(0)
    }

    async fn check_health(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.connection())
            .await
            .map_err(|error| self.failed(error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_beyond_exact_numbers_read_to_the_end() {
        assert_eq!(stream_id(42), "42-0");
        assert_eq!(stream_id(u64::MAX), "+");
    }
}
