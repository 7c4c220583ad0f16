//! Reading history: a small pool of read-only connections, used on tokio's
//! blocking threads so no async worker ever waits on the disk.
//!
//! Each read runs in one SQLite read transaction, so a channel's
//! trimmed-up-to mark and its messages come from the same snapshot: a
//! concurrent trim can never hide messages without the mark showing it.
//! The writer commits SQLite only every few tens of milliseconds, so each
//! snapshot is paired with the tail that continues it (see `tail`): the
//! snapshot's head is the tail's base, or the read starts again. What the
//! tail holds of a channel (its row, its newer messages) comes after what
//! the snapshot holds.
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

use crate::database::{ChannelRow, connect, sql};
use crate::retention::oldest_of_channel;
use crate::segment::{self, Entry, SegmentHead};
use crate::tail::{ChannelTail, SharedTail};

/// Reads run at once at most (each on a blocking thread with its own
/// connection); more wait their turn, so a crowd of subscribers catching up
/// at the same moment cannot open hundreds of connections and threads.
const CONCURRENT_READS: usize = 8;

/// The longest a read tries to pair a snapshot with the writer's tail.
const PAIRING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) struct Readers {
    path: PathBuf,
    epoch: Epoch,
    retention: Retention,
    clock: Arc<dyn Clock>,
    pool: Mutex<Vec<Connection>>,
    turns: Arc<Semaphore>,
    shared: Mutex<SharedMessages>,
    tail: SharedTail,
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
        tail: SharedTail,
    ) -> Self {
        Self {
            path,
            epoch,
            retention,
            clock,
            pool: Mutex::new(Vec::new()),
            turns: Arc::new(Semaphore::new(CONCURRENT_READS)),
            shared: Mutex::new(SharedMessages::default()),
            tail,
        }
    }

    /// A read transaction whose snapshot the tail continues, and what the
    /// tail took from it: `take` runs with the tail's base only once that
    /// base is the snapshot's head (a commit in between starts it again;
    /// the writer moves the base right after each commit, so a second try
    /// nearly always pairs).
    fn snapshot<'c, T>(
        &self,
        connection: &'c Connection,
        take: impl Fn(&SharedTail) -> (Seq, T),
    ) -> rusqlite::Result<(Transaction<'c>, T)> {
        let started = std::time::Instant::now();
        for attempt in 0u32.. {
            if attempt > 0 && started.elapsed() > PAIRING_TIMEOUT {
                let busy = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY);
                let why = "the history writer did not finish a commit".to_string();
                return Err(rusqlite::Error::SqliteFailure(busy, Some(why)));
            }
            if attempt > 100 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let snapshot = connection.unchecked_transaction()?;
            let head: String =
                snapshot.query_row("SELECT value FROM meta WHERE key = 'head'", [], |row| {
                    row.get(0)
                })?;
            let head = Seq(head.parse().unwrap_or(0));
            let (base, taken) = take(&self.tail);
            if base == head {
                return Ok((snapshot, taken));
            }
            drop(snapshot);
            std::thread::yield_now();
        }
        unreachable!("the attempts end by pairing or by the timeout")
    }

    /// A snapshot and what the tail holds of `channel`.
    fn channel_snapshot<'c>(
        &self,
        connection: &'c Connection,
        channel: &ChannelName,
    ) -> rusqlite::Result<(Transaction<'c>, ChannelTail)> {
        self.snapshot(connection, |tail| tail.channel(channel))
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
        let (snapshot, tail) = self.channel_snapshot(connection, channel)?;
        let row = match tail.row.clone() {
            Some(row) => Some(row),
            None => snapshot
                .prepare_cached(
                    "SELECT id, last_seq, retained, trimmed_upto FROM channels WHERE name = ?1",
                )?
                .query_row([channel.as_str()], |row| {
                    Ok(ChannelRow {
                        id: row.get(0)?,
                        last_seq: Seq(row.get::<_, i64>(1)? as u64),
                        retained: row.get::<_, i64>(2)? as u64,
                        trimmed_upto: Seq(row.get::<_, i64>(3)? as u64),
                        bytes: 0,
                    })
                })
                .optional()?,
        };
        let Some(row) = row.filter(|row| row.retained > 0) else {
            return Ok(None);
        };
        let mut retained = row.retained;
        if let Some(oldest_kept) = self.oldest_kept() {
            let trimmed_upto = row.trimmed_upto;
            let mut expired_in_database = true;
            let mut statement = snapshot.prepare_cached(segment::OF_CHANNEL)?;
            segment::each(
                &mut statement,
                params![row.id, sql(trimmed_upto)],
                |segment| {
                    // Times follow sequence order: the expired come first.
                    let expired = segment.published_at < oldest_kept;
                    if expired {
                        let count = segment.retained(trimmed_upto).len() as u64;
                        retained = retained.saturating_sub(count);
                    }
                    expired_in_database = expired;
                    expired
                },
            )?;
            if expired_in_database {
                let expired = tail
                    .messages()
                    .filter(|message| message.seq() > trimmed_upto)
                    .take_while(|message| message.published_at_ms() < oldest_kept)
                    .count() as u64;
                retained = retained.saturating_sub(expired);
            }
        }
        if retained == 0 {
            return Ok(None);
        }
        Ok(Some(ChannelSummary {
            last_id: Cursor::new(self.epoch.clone(), row.last_seq),
            retained: retained.min(self.max_messages() as u64),
        }))
    }

    pub(crate) async fn channels(
        self: &Arc<Self>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(ChannelName, ChannelSummary)>, StoreError> {
        self.with(move |readers, connection| {
            let after = after.unwrap_or_default();
            let (snapshot, changed) = readers.snapshot(connection, SharedTail::rows)?;
            // The tail's rows take the place of the database's: enough rows
            // are read that those it empties still leave `limit`.
            let mut listed: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
            let mut statement = snapshot.prepare_cached(
                "SELECT name, last_seq, retained FROM channels
                 WHERE name > ?1 AND retained > 0 ORDER BY name LIMIT ?2",
            )?;
            let rows = statement.query_map(
                params![after.as_str(), (limit + changed.len()) as i64],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)? as u64,
                        row.get::<_, i64>(2)? as u64,
                    ))
                },
            )?;
            for row in rows {
                let (name, last_seq, retained) = row?;
                listed.insert(name, (last_seq, retained));
            }
            for (name, row) in &changed {
                if name.as_str() > after.as_str() {
                    listed.insert(name.to_string(), (row.last_seq.0, row.retained));
                }
            }
            let max_messages = readers.max_messages() as u64;
            let mut channels = Vec::new();
            for (name, (last_seq, retained)) in listed {
                if channels.len() == limit {
                    break;
                }
                // Names were validated when stored; skip one that is not.
                let Ok(name) = ChannelName::new(&name) else {
                    continue;
                };
                if retained == 0 {
                    continue;
                }
                channels.push((
                    name,
                    ChannelSummary {
                        last_id: Cursor::new(readers.epoch.clone(), Seq(last_seq)),
                        retained: retained.min(max_messages),
                    },
                ));
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
    /// no id and what the folded marks remember of it. The tail's row, if
    /// it has one, is the newer.
    fn locate(
        &self,
        snapshot: &Transaction<'_>,
        channel: &ChannelName,
        tail: &ChannelTail,
    ) -> rusqlite::Result<(Option<i64>, Seq)> {
        let found = match &tail.row {
            Some(row) => Some((row.id, row.trimmed_upto, row.retained)),
            None => snapshot
                .prepare_cached("SELECT id, trimmed_upto, retained FROM channels WHERE name = ?1")?
                .query_row([channel.as_str()], |row| {
                    Ok((
                        row.get(0)?,
                        Seq(row.get::<_, i64>(1)? as u64),
                        row.get::<_, i64>(2)? as u64,
                    ))
                })
                .optional()?,
        };
        if let Some((id, trimmed_upto, retained)) = found {
            let beyond = retained as i64 - self.max_messages();
            let mut trimmed = trimmed_upto;
            if beyond > 0 {
                let beyond = beyond as usize;
                let name_len = channel.as_str().len();
                let oldest = oldest_of_channel(snapshot, id, trimmed, beyond, name_len)?;
                trimmed = trimmed.max(oldest.upto);
                // Those the database does not hold are the tail's oldest.
                let left = beyond.saturating_sub(oldest.count as usize);
                let newer = tail.messages().filter(|m| m.seq() > trimmed);
                if let Some(last) = newer.take(left).last() {
                    trimmed = trimmed.max(last.seq());
                }
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
        let (snapshot, tail) = self.channel_snapshot(connection, channel)?;
        let (id, trimmed_upto) = self.locate(&snapshot, channel, &tail)?;
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
        // no reader holds it decoded already. The tail's messages follow
        // the database's.
        let from = after.max(trimmed_upto);
        let mut taking = Taking {
            history: &mut history,
            upto,
            limit,
            oldest_kept: self.oldest_kept(),
            name_len: channel.as_str().len(),
            total: 0,
        };
        let mut statement = snapshot.prepare_cached(segment::OF_CHANNEL_WITH_BODY)?;
        let mut rows = statement.query(params![id, sql(from)])?;
        while let Some(row) = rows.next()? {
            let segment = SegmentHead::from_row(row)?;
            let mut body: Option<Bytes> = None;
            for entry in segment.retained(from) {
                let size = entry.size(taking.name_len);
                match taking.judge(entry.seq, segment.published_at, size) {
                    Judged::Take => {}
                    Judged::Skip => continue,
                    Judged::Stop => return Ok(history),
                }
                let message = self.message_at(channel, &segment, entry, row, &mut body)?;
                taking.history.messages.push(message);
            }
        }
        for message in tail.messages().filter(|message| message.seq() > from) {
            let size = comet_store::stored_size(message);
            match taking.judge(message.seq(), message.published_at_ms(), size) {
                Judged::Take => taking.history.messages.push(message.clone()),
                Judged::Skip => continue,
                Judged::Stop => break,
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
        let (snapshot, tail) = self.channel_snapshot(connection, channel)?;
        let (id, trimmed_upto) = self.locate(&snapshot, channel, &tail)?;
        let Some(id) = id else {
            return Ok(trimmed_upto);
        };
        // Newest first: the entry `count` places before the newest one up to
        // `upto` starts the backlog, unless an expired one (not part of the
        // backlog, and no gap for it either) comes first. The tail holds
        // the newest.
        let oldest_kept = self.oldest_kept();
        let mut start = trimmed_upto;
        let mut skipped = 0;
        let mut visit = |seq: Seq, published_at: u64| {
            if seq > upto || seq <= trimmed_upto {
                return true;
            }
            let expired = oldest_kept.is_some_and(|oldest| published_at < oldest);
            if expired || skipped == count {
                start = start.max(seq);
                return false;
            }
            skipped += 1;
            true
        };
        for message in tail.messages().rev() {
            if !visit(message.seq(), message.published_at_ms()) {
                return Ok(start);
            }
        }
        let mut statement = snapshot.prepare_cached(segment::OF_CHANNEL_NEWEST_FIRST)?;
        let query = params![id, sql(trimmed_upto), sql(upto)];
        segment::each(&mut statement, query, |segment| {
            for entry in segment.retained(trimmed_upto).iter().rev() {
                if !visit(entry.seq, segment.published_at) {
                    return false;
                }
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

/// What a read does with a message, in order (see `Taking::judge`).
enum Judged {
    /// Returned.
    Take,
    /// Expired and not swept yet: counted as removed, not returned.
    Skip,
    /// Past `upto`, or past a limit: the read ends.
    Stop,
}

/// A history being read: what is taken so far against the read's bounds.
struct Taking<'a> {
    history: &'a mut History,
    upto: Seq,
    limit: ReadLimit,
    oldest_kept: Option<u64>,
    name_len: usize,
    total: u64,
}

impl Taking<'_> {
    /// Judges the next message in order, at `seq`, published at
    /// `published_at`, of `size` stored bytes.
    fn judge(&mut self, seq: Seq, published_at: u64, size: u64) -> Judged {
        if seq > self.upto {
            return Judged::Stop;
        }
        if self.oldest_kept.is_some_and(|oldest| published_at < oldest) {
            // Times follow sequence order, so these come before any
            // message returned.
            self.history.trimmed_upto = self.history.trimmed_upto.max(seq);
            return Judged::Skip;
        }
        self.total = self.total.saturating_add(size);
        let full = self.history.messages.len() >= self.limit.messages
            || (!self.history.messages.is_empty() && self.total > self.limit.bytes);
        if full {
            // Truncated only when a message is left out.
            self.history.truncated = true;
            return Judged::Stop;
        }
        Judged::Take
    }
}

fn unavailable(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("reading the history failed: {error}"))
}
