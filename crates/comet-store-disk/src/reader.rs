//! Reading history: a small pool of read-only connections, used on tokio's
//! blocking threads so no async worker ever waits on the disk.
//!
//! Each read runs in one SQLite read transaction, so a channel's
//! trimmed-up-to mark and its messages come from the same snapshot: a
//! concurrent trim can never hide messages without the mark showing it.
//! Messages older than the age limit that the sweeper has not removed yet
//! are treated as removed (left out, and counted in the mark), and so are
//! the oldest of a channel holding more than its count limit (the writer
//! trims a full channel in batches, see `retention::trim_slack`): readers see
//! exactly the newest messages the limit allows.
//!
//! A read walks the channel's segments (see `segment`) in order, one
//! pass: it looks at each message's position and size, stops at its byte
//! limit, and loads a segment's data only for a message that fits and
//! that no reader holds already: decoded messages are shared through a table of
//! weak references by sequence number, so subscribers catching up on the
//! same history hold one copy of each message (and its encoded frames),
//! not one each.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use comet_protocol::{ChannelName, Cursor, Data, Epoch, EventType, Message, Seq};
use comet_store::forgotten::folded_mark_index;
use comet_store::{ChannelSummary, Clock, History, ReadLimit, Retention, StoreError};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use tokio::sync::Semaphore;

use crate::database::{connect, sql};
use crate::retention::oldest_of_channel;
use crate::segment::{self, Entry, SegmentHead};

/// Reads run at once at most (each on a blocking thread with its own
/// connection); more wait their turn, so a crowd of subscribers catching up
/// at the same moment cannot open hundreds of connections and threads.
const CONCURRENT_READS: usize = 8;

pub(crate) struct Readers {
    path: PathBuf,
    epoch: Epoch,
    retention: Retention,
    clock: Arc<dyn Clock>,
    pool: Mutex<Vec<Connection>>,
    turns: Arc<Semaphore>,
    shared: Mutex<SharedMessages>,
}

/// Messages some reader decoded and somebody still holds, by sequence
/// number. Dead entries are swept when the table has doubled since the
/// last sweep, so it stays within about twice the messages alive.
#[derive(Default)]
struct SharedMessages {
    by_seq: HashMap<u64, Weak<Message>>,
    sweep_at: usize,
}

impl SharedMessages {
    fn get(&self, seq: Seq) -> Option<Arc<Message>> {
        self.by_seq.get(&seq.0).and_then(Weak::upgrade)
    }

    fn insert(&mut self, message: &Arc<Message>) {
        if self.by_seq.len() >= self.sweep_at {
            self.by_seq.retain(|_, message| message.strong_count() > 0);
            self.sweep_at = (self.by_seq.len() * 2).max(1024);
        }
        self.by_seq.insert(message.seq().0, Arc::downgrade(message));
    }
}

impl Readers {
    pub(crate) fn new(
        path: PathBuf,
        epoch: Epoch,
        retention: Retention,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            path,
            epoch,
            retention,
            clock,
            pool: Mutex::new(Vec::new()),
            turns: Arc::new(Semaphore::new(CONCURRENT_READS)),
            shared: Mutex::new(SharedMessages::default()),
        }
    }

    /// Runs `work` with a read connection, on a blocking thread.
    async fn with<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Self, &Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let turn = self
            .turns
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the history store is closing".into()))?;
        let readers = self.clone();
        tokio::task::spawn_blocking(move || {
            // Held until the read is done, even if the caller gave up.
            let _turn = turn;
            let pooled = readers.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let connection = match pooled {
                Some(connection) => connection,
                None => {
                    let connection = connect(&readers.path)
                        .map_err(|error| StoreError::Unavailable(error.to_string()))?;
                    connection
                        .execute_batch("PRAGMA query_only = 1;")
                        .map_err(unavailable)?;
                    connection
                }
            };
            let result = work(&readers, &connection).map_err(unavailable);
            readers
                .pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(connection);
            result
        })
        .await
        .map_err(|error| StoreError::Unavailable(format!("a history read failed: {error}")))?
    }

    pub(crate) async fn read(
        self: &Arc<Self>,
        channel: ChannelName,
        after: Seq,
        upto: Seq,
        limit: ReadLimit,
    ) -> Result<History, StoreError> {
        self.with(move |readers, connection| {
            readers.read_history(connection, &channel, after, upto, limit)
        })
        .await
    }

    pub(crate) async fn backlog_start(
        self: &Arc<Self>,
        channel: ChannelName,
        count: usize,
        upto: Seq,
    ) -> Result<Seq, StoreError> {
        self.with(move |readers, connection| {
            readers.find_backlog_start(connection, &channel, count, upto)
        })
        .await
    }

    pub(crate) async fn summary(
        self: &Arc<Self>,
        channel: ChannelName,
    ) -> Result<Option<ChannelSummary>, StoreError> {
        self.with(move |readers, connection| readers.summarize(connection, &channel))
            .await
    }

    /// What `channel` holds as readers see it: without the messages beyond
    /// the count limit and those older than the age limit, both of which the
    /// writer may not have removed yet.
    fn summarize(
        &self,
        connection: &Connection,
        channel: &ChannelName,
    ) -> rusqlite::Result<Option<ChannelSummary>> {
        let snapshot = connection.unchecked_transaction()?;
        let found: Option<(i64, i64, i64, i64)> = snapshot
            .prepare_cached(
                "SELECT id, last_seq, retained, trimmed_upto FROM channels
                 WHERE name = ?1 AND retained > 0",
            )?
            .query_row([channel.as_str()], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .optional()?;
        let Some((id, last_seq, retained, trimmed_upto)) = found else {
            return Ok(None);
        };
        let mut retained = retained as u64;
        if let Some(oldest_kept) = self.oldest_kept() {
            let trimmed_upto = Seq(trimmed_upto as u64);
            let mut statement = snapshot.prepare_cached(segment::OF_CHANNEL)?;
            segment::each(&mut statement, params![id, sql(trimmed_upto)], |segment| {
                // Times follow sequence order: the expired come first.
                let expired = segment.published_at < oldest_kept;
                if expired {
                    let count = segment.retained(trimmed_upto).len() as u64;
                    retained = retained.saturating_sub(count);
                }
                expired
            })?;
        }
        if retained == 0 {
            return Ok(None);
        }
        Ok(Some(ChannelSummary {
            last_id: Cursor::new(self.epoch.clone(), Seq(last_seq as u64)),
            retained: retained.min(self.max_messages() as u64),
        }))
    }

    pub(crate) async fn channels(
        self: &Arc<Self>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(ChannelName, ChannelSummary)>, StoreError> {
        self.with(move |readers, connection| {
            let mut statement = connection.prepare_cached(
                "SELECT name, last_seq, min(retained, ?3) FROM channels
                 WHERE name > ?1 AND retained > 0 ORDER BY name LIMIT ?2",
            )?;
            let rows = statement.query_map(
                params![
                    after.as_deref().unwrap_or(""),
                    limit as i64,
                    readers.max_messages()
                ],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                },
            )?;
            let mut channels = Vec::new();
            for row in rows {
                let (name, last_seq, retained) = row?;
                // Names were validated when stored; skip one that is not.
                if let Ok(name) = ChannelName::new(&name) {
                    channels.push((
                        name,
                        ChannelSummary {
                            last_id: Cursor::new(readers.epoch.clone(), Seq(last_seq as u64)),
                            retained: retained as u64,
                        },
                    ));
                }
            }
            Ok(channels)
        })
        .await
    }

    /// The oldest publish time still kept, with retention by age.
    /// The count limit per channel.
    fn max_messages(&self) -> i64 {
        self.retention.max_messages.max(1) as i64
    }

    fn oldest_kept(&self) -> Option<u64> {
        self.retention
            .max_age
            .map(|age| self.clock.now_ms().saturating_sub(age.as_millis() as u64))
    }

    /// The channel's id and trimmed-up-to mark (counting the messages it
    /// holds beyond the count limit as trimmed); for a channel not held,
    /// no id and what the folded marks remember of it.
    fn locate(
        &self,
        snapshot: &Transaction<'_>,
        channel: &ChannelName,
    ) -> rusqlite::Result<(Option<i64>, Seq)> {
        let found: Option<(i64, i64, i64)> = snapshot
            .prepare_cached("SELECT id, trimmed_upto, retained FROM channels WHERE name = ?1")?
            .query_row([channel.as_str()], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
        if let Some((id, trimmed_upto, retained)) = found {
            let beyond = retained - self.max_messages();
            let mut trimmed = Seq(trimmed_upto as u64);
            if beyond > 0 {
                let name_len = channel.as_str().len();
                let oldest = oldest_of_channel(snapshot, id, trimmed, beyond as usize, name_len)?;
                trimmed = trimmed.max(oldest.upto);
            }
            return Ok((Some(id), trimmed));
        }
        let mark: Option<i64> = snapshot
            .prepare_cached("SELECT upto FROM forgotten_marks WHERE mark = ?1")?
            .query_row([folded_mark_index(channel) as i64], |row| row.get(0))
            .optional()?;
        Ok((None, Seq(mark.unwrap_or(0) as u64)))
    }

    fn read_history(
        &self,
        connection: &Connection,
        channel: &ChannelName,
        after: Seq,
        upto: Seq,
        limit: ReadLimit,
    ) -> rusqlite::Result<History> {
        let snapshot = connection.unchecked_transaction()?;
        let (id, trimmed_upto) = self.locate(&snapshot, channel)?;
        let mut history = History {
            messages: Vec::new(),
            trimmed_upto,
            truncated: false,
        };
        let Some(id) = id else {
            return Ok(history);
        };
        // One pass in order: positions and sizes are read first, and a
        // segment's body only once one of its messages fits the limits and
        // no reader holds it decoded already.
        let from = after.max(trimmed_upto);
        let oldest_kept = self.oldest_kept();
        let name_len = channel.as_str().len();
        let mut total: u64 = 0;
        let mut statement = snapshot.prepare_cached(segment::OF_CHANNEL_WITH_BODY)?;
        let mut rows = statement.query(params![id, sql(from)])?;
        'segments: while let Some(row) = rows.next()? {
            let segment = SegmentHead::from_row(row)?;
            let expired = oldest_kept.is_some_and(|oldest| segment.published_at < oldest);
            let mut body: Option<Bytes> = None;
            for entry in segment.retained(from) {
                if entry.seq > upto {
                    break 'segments;
                }
                if expired {
                    // Not swept yet: counted as removed. Times follow
                    // sequence order, so these come before any message
                    // returned.
                    history.trimmed_upto = history.trimmed_upto.max(entry.seq);
                    continue;
                }
                total = total.saturating_add(entry.size(name_len));
                let full = history.messages.len() >= limit.messages
                    || (!history.messages.is_empty() && total > limit.bytes);
                if full {
                    // Truncated only when a message is left out.
                    history.truncated = true;
                    break 'segments;
                }
                let message = self.message_at(channel, &segment, entry, row, &mut body)?;
                history.messages.push(message);
            }
        }
        Ok(history)
    }

    fn find_backlog_start(
        &self,
        connection: &Connection,
        channel: &ChannelName,
        count: usize,
        upto: Seq,
    ) -> rusqlite::Result<Seq> {
        let snapshot = connection.unchecked_transaction()?;
        let (id, trimmed_upto) = self.locate(&snapshot, channel)?;
        let Some(id) = id else {
            return Ok(trimmed_upto);
        };
        // Newest first: the entry `count` places before the newest one up to
        // `upto` starts the backlog, unless an expired one (not part of the
        // backlog, and no gap for it either) comes first.
        let oldest_kept = self.oldest_kept();
        let mut start = trimmed_upto;
        let mut skipped = 0;
        let mut statement = snapshot.prepare_cached(segment::OF_CHANNEL_NEWEST_FIRST)?;
        let query = params![id, sql(trimmed_upto), sql(upto)];
        segment::each(&mut statement, query, |segment| {
            let expired = oldest_kept.is_some_and(|oldest| segment.published_at < oldest);
            for entry in segment.retained(trimmed_upto).iter().rev() {
                if entry.seq > upto {
                    continue;
                }
                if expired || skipped == count {
                    start = start.max(entry.seq);
                    return false;
                }
                skipped += 1;
            }
            true
        })?;
        Ok(start)
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, SharedMessages> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The message `entry` of `segment` names: the copy some reader holds,
    /// or one decoded from the segment's body, loaded from `row` (selected
    /// with `OF_CHANNEL_WITH_BODY`) into `body` at most once.
    fn message_at(
        &self,
        channel: &ChannelName,
        segment: &SegmentHead,
        entry: &Entry,
        row: &Row<'_>,
        body: &mut Option<Bytes>,
    ) -> rusqlite::Result<Arc<Message>> {
        if let Some(message) = self.shared().get(entry.seq) {
            return Ok(message);
        }
        let body = match body {
            Some(body) => body.clone(),
            None => body.insert(Bytes::from(row.get::<_, Vec<u8>>(4)?)).clone(),
        };
        let message = self.message(channel, segment, entry, &body)?;
        self.shared().insert(&message);
        Ok(message)
    }

    /// The message `entry` of `segment` names, from the segment's `body`.
    fn message(
        &self,
        channel: &ChannelName,
        segment: &SegmentHead,
        entry: &Entry,
        body: &Bytes,
    ) -> rusqlite::Result<Arc<Message>> {
        let seq = entry.seq;
        let damaged =
            |what: String| rusqlite::Error::InvalidColumnType(0, what, rusqlite::types::Type::Blob);
        let (Some(event), Some(data)) =
            (body.get(entry.event.clone()), body.get(entry.data.clone()))
        else {
            return Err(damaged(format!(
                "stored body of {channel}/{seq} is too short"
            )));
        };
        let event = std::str::from_utf8(event)
            .ok()
            .and_then(|event| EventType::new(event).ok())
            .ok_or_else(|| damaged(format!("stored event type of {channel}/{seq}")))?;
        // A message sharing its segment keeps a copy of its own, so a
        // message held long does not keep its neighbours' bytes alive.
        let data = if segment.entries.len() == 1 {
            body.slice(entry.data.clone())
        } else {
            Bytes::copy_from_slice(data)
        };
        let data = Data::from_utf8(data)
            .map_err(|error| damaged(format!("stored data of {channel}/{seq}: {error}")))?;
        Ok(Arc::new(Message::new(
            self.epoch.clone(),
            seq,
            channel.clone(),
            event,
            data,
            segment.published_at,
        )))
    }
}

fn unavailable(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("reading the history failed: {error}"))
}
