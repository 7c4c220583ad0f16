//! The SQLite side: the schema, connection settings, and loading what the
//! writer keeps in memory.
//!
//! Schema (format 4):
//! - `meta(key, value)`: `epoch`, `head` (newest sequence number), `clean`
//!   (`1` after an orderly close, `0` while open);
//! - `channels(id, name, last_seq, trimmed_upto, retained, bytes)`: one row
//!   per channel held, updated in the same transaction as the messages it
//!   describes. A row with nothing retained is a *tombstone*: what gap
//!   detection needs of a forgotten channel. Tombstones are bounded: the
//!   oldest (by `last_seq`, found through the partial index
//!   `channels_forgotten`) are deleted and folded into
//!   `forgotten_marks(mark, upto)`, the fixed table of
//!   `comet_store::forgotten`. Only channels with retained messages are
//!   loaded at start;
//! - `segments(channel_id, last_seq, first_seq, published_at, entries,
//!   body)` (format 4): the messages, a row per channel per committed
//!   group (see `segment`), clustered by `(channel_id, last_seq)` so
//!   reading a channel after a position is one range scan, with the index
//!   `segments_in_order (first_seq)` for the store-wide order (trimming by
//!   total size and by age). Formats 1 to 3 kept a row per message in
//!   `messages`; the upgrade moves each into a segment of its own;
//! - `idempotency_keys(seq, key_hash, fingerprint, subscribers, created)`
//!   (format 3): the keys of recent keyed publishes (see
//!   `comet_store::idempotency`), by the position of the message each
//!   stored, written in the transaction that stores it. Rows are appended
//!   at the end and let go from the start; lookups are made in memory, in
//!   the copy loaded at start.
//!
//! Settings: WAL journal with `synchronous=FULL`, so a commit is on disk,
//! synced, when it returns, and a crash loses nothing committed (SQLite
//! checks every WAL frame's checksum at start and ignores a torn tail; the
//! workspace's `.cargo/config.toml` builds it to sync with `fdatasync`,
//! the data and the file's size without the inode's times);
//! incremental auto-vacuum, so space freed by retention can be given back
//! to the file system.

use std::collections::HashMap;
use std::path::Path;

use comet_protocol::{ChannelName, Epoch, Seq};
use comet_store::idempotency::{Fingerprint, KeyHash, KeyRecord, KeyTable};
use comet_store::{Footprint, Original};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::directory::{APPLICATION_ID, FORMAT_VERSION, OpenError};
use crate::segment::single_entry;

/// The WAL is truncated back to this size after checkpoints.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// What the store knows of one channel.
#[derive(Clone, Debug)]
pub(crate) struct ChannelRow {
    pub(crate) id: i64,
    pub(crate) last_seq: Seq,
    pub(crate) trimmed_upto: Seq,
    pub(crate) retained: u64,
    pub(crate) bytes: u64,
}

/// The writer's in-memory copy of `meta` and of the `channels` rows with
/// retained messages (tombstones stay on disk only, counted).
#[derive(Default)]
pub(crate) struct Catalog {
    pub(crate) channels: HashMap<ChannelName, ChannelRow>,
    pub(crate) names: HashMap<i64, ChannelName>,
    pub(crate) head: Seq,
    pub(crate) bytes: u64,
    pub(crate) messages: u64,
    pub(crate) next_id: i64,
    /// Tombstone rows on disk.
    pub(crate) forgotten: u64,
    /// The idempotency keys on disk.
    pub(crate) keys: KeyTable,
}

impl Catalog {
    /// What the store holds, by this catalog.
    pub(crate) fn footprint(&self) -> Footprint {
        Footprint {
            channels: self.channels.len() as u64,
            forgotten_channels: self.forgotten,
            messages: self.messages,
            bytes: self.bytes,
            idempotency_keys: self.keys.len() as u64,
        }
    }
}

/// The highest sequence number SQLite's signed 64-bit integers hold: the
/// store refuses to append beyond it.
pub(crate) const MAX_SEQ: Seq = Seq(i64::MAX as u64);

/// A sequence number as SQLite stores it (a signed 64-bit integer):
/// positions beyond `i64::MAX` mean "everything".
pub(crate) fn sql(seq: Seq) -> i64 {
    i64::try_from(seq.0).unwrap_or(i64::MAX)
}

fn sqlite(what: &str) -> impl FnOnce(rusqlite::Error) -> OpenError + '_ {
    move |source| OpenError::Sqlite {
        what: what.to_string(),
        source,
    }
}

/// Opens a connection with the settings every connection needs.
pub(crate) fn connect(path: &Path) -> Result<Connection, OpenError> {
    let connection = Connection::open(path).map_err(sqlite("opening the history database"))?;
    connection
        .execute_batch(&format!(
            "PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 10000;
             PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"
        ))
        .map_err(sqlite("configuring the history database"))?;
    // Plans that never depend on bound values (SQLite's query planner
    // stability guarantee). Without it, the bundled SQLite (built with
    // STAT4) compiles a statement again at every run when a bound value
    // might change its plan (a channel id beside an ORDER BY, a limit):
    // the writer's trim statement was compiled once per commit, which cost
    // a quarter of the durable publish rate.
    connection
        .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(sqlite("configuring the history database"))?;
    Ok(connection)
}

/// The writer's page cache, in KiB. SQLite's default (2 MiB, about 500
/// pages) is smaller than what one group over many channels touches (a
/// group over 512 channels changed about 900 pages, each channel's newest
/// segment on a leaf of its own): the writer then spilled pages to the log
/// before the commit and read them back within it. SQLite takes the pages
/// only as it uses them, up to this bound.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// Settings of the writer's connection beyond [`connect`]'s. Its
/// transactions span many groups (see `writer`); what a statement of one
/// may have to undo is kept in memory, not in a temporary file. Its
/// commits leave checkpoints to the checkpointer (see `checkpoint`).
pub(crate) fn configure_writer(connection: &Connection) -> Result<(), OpenError> {
    connection
        .execute_batch(&format!(
            "PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA temp_store = MEMORY;
             PRAGMA wal_autocheckpoint = 0;"
        ))
        .map_err(sqlite("configuring the history database"))
}

/// Opens a connection that cannot write: for looking before writing.
/// Closing it never checkpoints, so a database that is refused after this
/// look is left exactly as it was.
pub(crate) fn connect_read_only(path: &Path) -> Result<Connection, OpenError> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite("opening the history database"))
}

/// Creates the schema in a fresh database, in one transaction, with a new
/// epoch.
pub(crate) fn initialize(connection: &mut Connection, epoch: &Epoch) -> Result<(), OpenError> {
    connection
        .execute_batch("PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL;")
        .map_err(sqlite("preparing the history database"))?;
    let transaction = connection
        .transaction()
        .map_err(sqlite("creating the history database"))?;
    transaction
        .execute_batch(&format!(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
             CREATE TABLE channels (
                 id INTEGER PRIMARY KEY,
                 name TEXT NOT NULL UNIQUE,
                 last_seq INTEGER NOT NULL,
                 trimmed_upto INTEGER NOT NULL,
                 retained INTEGER NOT NULL,
                 bytes INTEGER NOT NULL);
             {FORMAT_4}
             {FORMAT_2}
             {FORMAT_3}
             PRAGMA application_id = {APPLICATION_ID};
             PRAGMA user_version = {FORMAT_VERSION};"
        ))
        .map_err(sqlite("creating the history schema"))?;
    transaction
        .execute(
            "INSERT INTO meta (key, value) VALUES ('epoch', ?1), ('head', '0'), ('clean', '1')",
            params![epoch.as_str()],
        )
        .map_err(sqlite("recording the epoch"))?;
    transaction
        .commit()
        .map_err(sqlite("creating the history database"))
}

/// What format 2 added to format 1: tombstones found by age, and the
/// folded marks.
const FORMAT_2: &str =
    "CREATE TABLE forgotten_marks (mark INTEGER PRIMARY KEY, upto INTEGER NOT NULL);
     CREATE INDEX channels_forgotten ON channels (last_seq) WHERE retained = 0;";

/// What format 3 added to format 2: idempotency keys.
const FORMAT_3: &str = "CREATE TABLE idempotency_keys (
         seq INTEGER PRIMARY KEY,
         key_hash BLOB NOT NULL,
         fingerprint BLOB NOT NULL,
         subscribers INTEGER NOT NULL,
         created INTEGER NOT NULL);";

/// What format 4 changed: messages are stored in segments.
const FORMAT_4: &str = "CREATE TABLE segments (
         channel_id INTEGER NOT NULL,
         last_seq INTEGER NOT NULL,
         first_seq INTEGER NOT NULL,
         published_at INTEGER NOT NULL,
         entries BLOB NOT NULL,
         body BLOB NOT NULL,
         PRIMARY KEY (channel_id, last_seq)) WITHOUT ROWID;
     CREATE UNIQUE INDEX segments_in_order ON segments (first_seq);";

/// Brings a database of an older format (checked to be Comet's) to this
/// one, in one transaction.
pub(crate) fn upgrade(connection: &mut Connection) -> Result<(), OpenError> {
    let version: i32 = connection
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sqlite("reading the history format"))?;
    if version >= FORMAT_VERSION {
        return Ok(());
    }
    let transaction = connection
        .transaction()
        .map_err(sqlite("upgrading the history format"))?;
    let mut moved = 0;
    if version < 4 {
        let mut steps = String::new();
        if version < 2 {
            steps.push_str(FORMAT_2);
        }
        if version < 3 {
            steps.push_str(FORMAT_3);
        }
        steps.push_str(FORMAT_4);
        transaction
            .execute_batch(&steps)
            .map_err(sqlite("upgrading the history format"))?;
        moved =
            messages_to_segments(&transaction).map_err(sqlite("moving messages into segments"))?;
        transaction
            .execute_batch("DROP TABLE messages;")
            .map_err(sqlite("upgrading the history format"))?;
    }
    // Format 5 adds the journal beside the database (see `journal`): a
    // build of format 4 must not open a directory whose journal may hold
    // acknowledged messages it would not read.
    transaction
        .execute_batch(&format!("PRAGMA user_version = {FORMAT_VERSION};"))
        .map_err(sqlite("upgrading the history format"))?;
    transaction
        .commit()
        .map_err(sqlite("upgrading the history format"))?;
    if version < 4 {
        // The old table's pages go back to the file system now, not a few
        // thousand per sweep.
        give_back_free_pages(connection).map_err(sqlite("giving back the old format's space"))?;
    }
    tracing::info!(
        from = version,
        to = FORMAT_VERSION,
        messages = moved,
        "history format upgraded"
    );
    Ok(())
}

/// Returns every free page of the file to the file system.
fn give_back_free_pages(connection: &Connection) -> rusqlite::Result<()> {
    // Each row of the answer is one freed page; reading them runs it.
    let mut vacuum = connection.prepare("PRAGMA incremental_vacuum")?;
    let mut rows = vacuum.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

/// Moves every row of format 3's `messages` into a segment of its own;
/// returns how many.
fn messages_to_segments(transaction: &rusqlite::Transaction<'_>) -> rusqlite::Result<u64> {
    let mut read = transaction
        .prepare("SELECT seq, channel_id, published_at, event, data FROM messages ORDER BY seq")?;
    let mut insert = transaction.prepare(
        "INSERT INTO segments (first_seq, channel_id, last_seq, published_at, entries, body)
         VALUES (?1, ?2, ?1, ?3, ?4, ?5)",
    )?;
    let mut rows = read.query([])?;
    let mut moved = 0;
    while let Some(row) = rows.next()? {
        let event: String = row.get(3)?;
        let data: Vec<u8> = row.get(4)?;
        let mut body = Vec::with_capacity(event.len() + data.len());
        body.extend_from_slice(event.as_bytes());
        body.extend_from_slice(&data);
        insert.execute(params![
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
            single_entry(event.len(), data.len()),
            body,
        ])?;
        moved += 1;
    }
    Ok(moved)
}

/// Reads a `meta` value.
fn meta(connection: &Connection, key: &str) -> Result<Option<String>, OpenError> {
    connection
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
            row.get(0)
        })
        .optional()
        .map_err(sqlite("reading the history metadata"))
}

/// What opening found: the epoch, the catalog, and whether the previous run
/// ended without closing.
pub(crate) struct Loaded {
    pub(crate) epoch: Epoch,
    pub(crate) catalog: Catalog,
    pub(crate) unclean: bool,
}

/// Loads the epoch and catalog. Writes nothing.
pub(crate) fn load(connection: &Connection, path: &Path) -> Result<Loaded, OpenError> {
    let corrupt = |reason: String| OpenError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let epoch = meta(connection, "epoch")?.ok_or_else(|| corrupt("no epoch recorded".into()))?;
    let epoch = Epoch::new(&epoch).map_err(|_| corrupt(format!("invalid epoch {epoch:?}")))?;
    let head: u64 = meta(connection, "head")?
        .and_then(|head| head.parse().ok())
        .filter(|head| Seq(*head) <= MAX_SEQ)
        .ok_or_else(|| corrupt("no valid head recorded".into()))?;
    let unclean = meta(connection, "clean")?.as_deref() != Some("1");

    let mut catalog = Catalog {
        head: Seq(head),
        next_id: 1,
        ..Catalog::default()
    };
    let mut statement = connection
        .prepare(
            "SELECT id, name, last_seq, trimmed_upto, retained, bytes FROM channels WHERE retained > 0",
        )
        .map_err(sqlite("reading the channels"))?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                ChannelRow {
                    id: row.get(0)?,
                    last_seq: Seq(row.get::<_, i64>(2)? as u64),
                    trimmed_upto: Seq(row.get::<_, i64>(3)? as u64),
                    retained: row.get::<_, i64>(4)? as u64,
                    bytes: row.get::<_, i64>(5)? as u64,
                },
            ))
        })
        .map_err(sqlite("reading the channels"))?;
    for row in rows {
        let (id, name, channel) = row.map_err(sqlite("reading the channels"))?;
        let name = ChannelName::new(&name)
            .map_err(|error| corrupt(format!("invalid channel name {name:?}: {error}")))?;
        catalog.bytes += channel.bytes;
        catalog.messages += channel.retained;
        catalog.next_id = catalog.next_id.max(id + 1);
        catalog.names.insert(id, name.clone());
        catalog.channels.insert(name, channel);
    }
    drop(statement);
    let (forgotten, highest_id): (i64, Option<i64>) = connection
        .query_row(
            "SELECT (SELECT count(*) FROM channels WHERE retained = 0), (SELECT max(id) FROM channels)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(sqlite("counting the forgotten channels"))?;
    catalog.forgotten = forgotten as u64;
    // A database of an older format has no keys yet (the table comes with
    // the upgrade, after this look).
    let has_keys: bool = connection
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'idempotency_keys')",
            [],
            |row| row.get(0),
        )
        .map_err(sqlite("counting the idempotency keys"))?;
    if has_keys {
        catalog.keys = load_keys(connection)?;
    }
    // Ids of tombstones are not reused by new channels.
    catalog.next_id = catalog.next_id.max(highest_id.unwrap_or(0) + 1);
    Ok(Loaded {
        epoch,
        catalog,
        unclean,
    })
}

/// The idempotency keys, oldest first.
fn load_keys(connection: &Connection) -> Result<KeyTable, OpenError> {
    let mut keys = KeyTable::default();
    let mut statement = connection
        .prepare(
            "SELECT seq, key_hash, fingerprint, subscribers, created FROM idempotency_keys
             ORDER BY seq",
        )
        .map_err(sqlite("reading the idempotency keys"))?;
    let rows = statement
        .query_map([], |row| {
            let hash: Vec<u8> = row.get(1)?;
            let fingerprint: Vec<u8> = row.get(2)?;
            let record = KeyRecord {
                fingerprint: Fingerprint(sixteen(&fingerprint)),
                original: Original {
                    seq: Seq(row.get::<_, i64>(0)? as u64),
                    subscribers: row.get::<_, i64>(3)? as u64,
                },
                at_ms: row.get::<_, i64>(4)? as u64,
            };
            Ok((KeyHash(sixteen(&hash)), record))
        })
        .map_err(sqlite("reading the idempotency keys"))?;
    for row in rows {
        let (hash, record) = row.map_err(sqlite("reading the idempotency keys"))?;
        keys.remember(hash, record);
    }
    Ok(keys)
}

/// 16 bytes from a blob; one of another length (never written) gives
/// zeros, which match nothing real.
fn sixteen(blob: &[u8]) -> [u8; 16] {
    blob.try_into().unwrap_or([0; 16])
}

/// Records whether the database is open (`clean = 0`) or was closed in
/// order (`clean = 1`).
pub(crate) fn mark_clean(connection: &Connection, clean: bool) -> rusqlite::Result<()> {
    connection
        .execute(
            "UPDATE meta SET value = ?1 WHERE key = 'clean'",
            [if clean { "1" } else { "0" }],
        )
        .map(drop)
}

/// Checks the database's structure after an unclean stop.
pub(crate) fn quick_check(connection: &Connection, path: &Path) -> Result<(), OpenError> {
    let result: String = connection
        .query_row("PRAGMA quick_check(1)", [], |row| row.get(0))
        .map_err(|error| OpenError::Corrupt {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
    if result == "ok" {
        Ok(())
    } else {
        Err(OpenError::Corrupt {
            path: path.to_path_buf(),
            reason: result,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statement whose plan SQLite would tie to its bound values (with
    /// STAT4, as bundled) runs with new values without being compiled
    /// again: the writer binds new ones at every commit.
    #[test]
    fn statements_are_not_compiled_again_for_new_bound_values() {
        let dir = std::env::temp_dir().join(format!("comet-qpsg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.db");
        let mut connection = connect(&path).unwrap();
        initialize(&mut connection, &comet_store::new_epoch()).unwrap();
        for seq in 1..=20_i64 {
            connection
                .execute(
                    "INSERT INTO segments (first_seq, channel_id, last_seq, published_at, entries, body)
                     VALUES (?1, ?2, ?1, 0, ?3, x'')",
                    params![seq, seq % 2, single_entry(0, 0)],
                )
                .unwrap();
        }
        let mut oldest = connection
            .prepare(crate::segment::OF_CHANNEL_NEWEST_FIRST)
            .unwrap();
        for run in 0..6_i64 {
            let found = oldest
                .query_map(params![run % 2, run, 20 - run], |row| row.get::<_, i64>(0))
                .unwrap()
                .count();
            assert!(found > 0);
        }
        assert_eq!(
            oldest.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "the statement was compiled again"
        );
        drop(oldest);
        drop(connection);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
