//! One group's work in SQLite and the journal: the statements that store
//! the group and apply retention (`store_statements`), and its journal
//! record (`store_group`). Each draft's idempotency key is judged before
//! (`comet_store::idempotency::plan`, shared with the memory store). The
//! writer thread (see `writer`) gathers groups and decides when SQLite
//! commits.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use comet_protocol::{ChannelName, Message, Seq};
use comet_store::idempotency::{KeyHash, KeyRecord};
use comet_store::{AfterCommit, AppendError, Appended, Retention, stored_size};
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use crate::draft::Draft;
use crate::journal::Journal;
use crate::retention::{evict_tombstones, trim_by_bytes, trim_by_count};
use crate::segment::SegmentBuilder;

/// An append whose drafts were judged and numbered, waiting for the
/// group's commit.
pub(crate) struct PendingAppend {
    /// What became of each draft (stored messages not yet committed).
    pub(crate) outcomes: Vec<Appended>,
    /// The keys of its stored messages, to remember in the same commit.
    pub(crate) keys: Vec<NewKey>,
    pub(crate) reply: oneshot::Sender<Result<Vec<Appended>, AppendError>>,
    pub(crate) after_commit: Option<AfterCommit>,
}

impl PendingAppend {
    pub(crate) fn messages(&self) -> impl Iterator<Item = &Arc<Message>> {
        self.outcomes.iter().filter_map(|outcome| match outcome {
            Appended::Stored(message) => Some(message),
            Appended::Repeat(_) => None,
        })
    }
}

/// A key to remember with its message.
pub(crate) struct NewKey {
    pub(crate) hash: KeyHash,
    pub(crate) record: KeyRecord,
}

/// Why a group could not be stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GroupError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the journal: {0}")]
    Journal(#[from] std::io::Error),
    /// The database and the journal do not fit together.
    #[error("{0}")]
    Recovery(String),
}

/// Stores one group in SQLite's open transaction and writes it to the
/// journal: durable once this returns. If either fails, the caller rolls
/// the whole transaction back and stores the journal's groups again
/// ([`Writer::abandon_open`]): a savepoint per group would copy every page
/// the group changes again, and a group fails only when the disk does.
pub(crate) fn store_group(
    connection: &Connection,
    journal: &mut Journal,
    retention: &Retention,
    draft: &mut Draft<'_>,
    pending: &[PendingAppend],
    forget_keys_upto: Option<Seq>,
) -> Result<(), GroupError> {
    store_statements(connection, retention, draft, pending, forget_keys_upto)?;
    let messages = pending.iter().flat_map(PendingAppend::messages);
    let keys = pending
        .iter()
        .flat_map(|append| &append.keys)
        .map(|key| (&key.hash, &key.record));
    journal.write(messages, keys)?;
    Ok(())
}

/// Stores one group of appends and their keys, lets go of the keys up to
/// `forget_keys_upto`, and applies retention, in the transaction open.
pub(crate) fn store_statements(
    connection: &Connection,
    retention: &Retention,
    draft: &mut Draft<'_>,
    pending: &[PendingAppend],
    forget_keys_upto: Option<Seq>,
) -> rusqlite::Result<()> {
    let mut open: HashMap<i64, SegmentBuilder> = HashMap::new();
    let mut full = Vec::new();
    for message in pending.iter().flat_map(PendingAppend::messages) {
        let size = stored_size(message);
        let channel = draft.channel(connection, message.channel())?;
        channel.last_seq = message.seq();
        channel.retained += 1;
        channel.bytes += size;
        let id = channel.id;
        draft.bytes += size;
        draft.messages += 1;
        match open.get_mut(&id) {
            Some(segment) if segment.takes(message) => segment.push(message),
            _ => {
                let segment = SegmentBuilder::new(id, message);
                full.extend(open.insert(id, segment));
            }
        }
    }
    for segment in full.iter().chain(open.values()) {
        segment.insert(connection)?;
    }
    if let Some(upto) = forget_keys_upto {
        forget_keys(connection, upto)?;
    }
    remember_keys(connection, pending)?;
    // Each channel the group appended to, once, in the order first met.
    let mut seen = HashSet::new();
    let touched: Vec<ChannelName> = pending
        .iter()
        .flat_map(PendingAppend::messages)
        .map(|message| message.channel())
        .filter(|name| seen.insert(*name))
        .cloned()
        .collect();
    trim_by_count(connection, draft, &touched, retention.max_messages)?;
    if let Some(max_bytes) = retention.max_bytes {
        let newest = draft.head;
        trim_by_bytes(connection, draft, max_bytes, newest)?;
    }
    draft.save(connection)?;
    evict_tombstones(connection, draft, retention.forgotten_channels)
}

/// Appends the keys of the group's stored messages.
pub(crate) fn remember_keys(
    transaction: &Connection,
    pending: &[PendingAppend],
) -> rusqlite::Result<()> {
    let mut insert = transaction.prepare_cached(
        "INSERT INTO idempotency_keys (seq, key_hash, fingerprint, subscribers, created)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for key in pending.iter().flat_map(|append| &append.keys) {
        let record = &key.record;
        insert.execute(params![
            record.original.seq.0 as i64,
            &key.hash.0[..],
            &record.fingerprint.0[..],
            record.original.subscribers as i64,
            record.at_ms as i64,
        ])?;
    }
    Ok(())
}

/// Deletes the keys of messages up to `upto`: the oldest, chosen by the
/// writer's [`KeyTable`].
pub(crate) fn forget_keys(connection: &Connection, upto: Seq) -> rusqlite::Result<()> {
    connection
        .prepare_cached("DELETE FROM idempotency_keys WHERE seq <= ?1")?
        .execute([upto.0 as i64])
        .map(drop)
}
