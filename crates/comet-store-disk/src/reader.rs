//! Reading history: a small pool of read-only connections, used on tokio's
//! blocking threads so no async worker ever waits on the disk.
//!
//! Each read runs in one SQLite read transaction, so a channel's
//! trimmed-up-to mark and its messages come from the same snapshot: a
//! concurrent trim can never hide messages without the mark showing it.
//! Messages older than the age limit that the sweeper has not removed yet
//! are treated as removed (left out, and counted in the mark).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use comet_protocol::{ChannelName, Cursor, Data, Epoch, EventType, Message, Seq};
use comet_store::{ChannelSummary, Clock, History, Retention, StoreError};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Semaphore;

use crate::database::{connect, sql};

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
}

/// Which messages of a channel to read.
pub(crate) enum Selection {
    /// Up to `limit` with `after < seq <= upto`, oldest first.
    After { after: Seq, upto: Seq, limit: usize },
    /// The newest `count` with `seq <= upto`, oldest first.
    Latest { count: usize, upto: Seq },
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

    pub(crate) async fn history(
        self: &Arc<Self>,
        channel: ChannelName,
        selection: Selection,
    ) -> Result<History, StoreError> {
        self.with(move |readers, connection| readers.read_history(connection, &channel, &selection))
            .await
    }

    pub(crate) async fn summary(
        self: &Arc<Self>,
        channel: ChannelName,
    ) -> Result<Option<ChannelSummary>, StoreError> {
        self.with(move |readers, connection| {
            connection
                .query_row(
                    "SELECT last_seq, retained FROM channels WHERE name = ?1",
                    [channel.as_str()],
                    |row| {
                        Ok(ChannelSummary {
                            last_id: Cursor::new(
                                readers.epoch.clone(),
                                Seq(row.get::<_, i64>(0)? as u64),
                            ),
                            retained: row.get::<_, i64>(1)? as u64,
                        })
                    },
                )
                .optional()
        })
        .await
    }

    pub(crate) async fn channels(
        self: &Arc<Self>,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<(ChannelName, ChannelSummary)>, StoreError> {
        self.with(move |readers, connection| {
            let mut statement = connection.prepare_cached(
                "SELECT name, last_seq, retained FROM channels WHERE name > ?1 ORDER BY name LIMIT ?2",
            )?;
            let rows = statement.query_map(
                params![after.as_deref().unwrap_or(""), limit as i64],
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

    fn read_history(
        &self,
        connection: &Connection,
        channel: &ChannelName,
        selection: &Selection,
    ) -> rusqlite::Result<History> {
        let snapshot = connection.unchecked_transaction()?;
        let found: Option<(i64, i64)> = snapshot
            .prepare_cached("SELECT id, trimmed_upto FROM channels WHERE name = ?1")?
            .query_row([channel.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        let Some((id, trimmed_upto)) = found else {
            return Ok(History::default());
        };
        let mut rows = Vec::new();
        match selection {
            Selection::After { after, upto, limit } => {
                let mut statement = snapshot.prepare_cached(
                    "SELECT seq, event, data, published_at FROM messages
                     WHERE channel_id = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4",
                )?;
                let found = statement.query_map(
                    params![id, sql(*after), sql(*upto), *limit as i64],
                    row_values,
                )?;
                for row in found {
                    rows.push(row?);
                }
            }
            Selection::Latest { count, upto } => {
                let mut statement = snapshot.prepare_cached(
                    "SELECT seq, event, data, published_at FROM messages
                     WHERE channel_id = ?1 AND seq <= ?2 ORDER BY seq DESC LIMIT ?3",
                )?;
                let found =
                    statement.query_map(params![id, sql(*upto), *count as i64], row_values)?;
                for row in found {
                    rows.push(row?);
                }
                rows.reverse();
            }
        }
        drop(snapshot);

        let oldest_kept = self
            .retention
            .max_age
            .map(|age| self.clock.now_ms().saturating_sub(age.as_millis() as u64));
        let mut history = History {
            messages: Vec::with_capacity(rows.len()),
            trimmed_upto: Seq(trimmed_upto as u64),
        };
        for (seq, event, data, published_at) in rows {
            if oldest_kept.is_some_and(|oldest| published_at < oldest) {
                history.trimmed_upto = history.trimmed_upto.max(seq);
                continue;
            }
            history
                .messages
                .push(self.message(channel, seq, &event, data, published_at)?);
        }
        Ok(history)
    }

    fn message(
        &self,
        channel: &ChannelName,
        seq: Seq,
        event: &str,
        data: Vec<u8>,
        published_at: u64,
    ) -> rusqlite::Result<Arc<Message>> {
        let damaged =
            |what: String| rusqlite::Error::InvalidColumnType(0, what, rusqlite::types::Type::Blob);
        let event = EventType::new(event)
            .map_err(|error| damaged(format!("stored event type of {channel}/{seq}: {error}")))?;
        let data = Data::from_utf8(Bytes::from(data))
            .map_err(|error| damaged(format!("stored data of {channel}/{seq}: {error}")))?;
        Ok(Arc::new(Message::new(
            self.epoch.clone(),
            seq,
            channel.clone(),
            event,
            data,
            published_at,
        )))
    }
}

type Row = (Seq, String, Vec<u8>, u64);

fn row_values(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        Seq(row.get::<_, i64>(0)? as u64),
        row.get(1)?,
        row.get(2)?,
        row.get::<_, i64>(3)? as u64,
    ))
}

fn unavailable(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("reading the history failed: {error}"))
}
