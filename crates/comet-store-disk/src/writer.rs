//! The writer: one thread that owns the write connection and commits
//! appends in groups.
//!
//! Publishers send their appends over a channel and wait for the reply. The
//! thread takes the first waiting append, then every other one already
//! waiting (up to [`MAX_GROUP`]), numbers them, stores them (a segment
//! row per channel, see `segment`) and applies retention in one
//! transaction, commits (one fsync for the whole group),
//! tells the commit listener of each message in order, and only then
//! replies. While a group commits, the next one gathers: the busier the
//! store, the larger the groups, and durability costs one fsync per group
//! rather than per message.
//!
//! A group does not always find its company waiting. Its publishers send
//! their next appends only once their replies are out, and on a busy core
//! the first of them reaches the writer while the others are still on
//! their way: without waiting, groups alternate between one or two appends
//! and the rest. So a group that finds fewer appends than the last group
//! held waits for the missing ones, at most [`GATHER_WAIT`]: as many
//! publishers as were just served are likely to be back. A lone publisher
//! (a last group of one) never waits.
//!
//! Everything a group changes is drafted first (`draft`) and applied to
//! the in-memory catalog only after the commit succeeded: a failed commit
//! leaves the catalog as the database is, and the group's sequence numbers
//! unused.
//!
//! A channel left with nothing retained leaves the catalog (its row stays
//! as a tombstone, see `database`); one published to again is looked up on
//! disk and revived. Each commit lets go of at most `retention::EVICT_STEP` of the
//! oldest tombstones beyond the bound, and each age sweep removes at most
//! [`SWEEP_STEP`] segments: a long sweep runs as many short transactions,
//! with appends served in between.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use comet_protocol::{ChannelName, Epoch, Message, Seq};
use comet_store::idempotency::{Fingerprint, KeyHash, KeyRecord, KeyTable, Lookup};
use comet_store::{
    AfterCommit, AppendError, Appended, Clock, CommitListener, Draft as MessageDraft,
    IdempotencyOptions, Original, Retention, StoreError, stored_size,
};
use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use tokio::sync::oneshot;

use crate::database::{Catalog, MAX_SEQ, mark_clean};
use crate::draft::Draft;
use crate::retention::{evict_tombstones, trim_by_age, trim_by_bytes, trim_by_count};
use crate::segment::SegmentBuilder;

/// The most messages committed together: appends are gathered into a
/// group until it holds this many drafts (a batch is never split, so a
/// group of one large batch may hold more).
pub(crate) const MAX_GROUP: usize = 1024;

/// The longest a group waits for the appends the last group suggests are
/// on their way (see the module docs).
pub(crate) const GATHER_WAIT: Duration = Duration::from_micros(200);

/// Most expired segments one sweep transaction removes.
pub(crate) const SWEEP_STEP: usize = 1024;

/// What the store holds, as of the last commit (read by `footprint`).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) channels: AtomicU64,
    pub(crate) forgotten: AtomicU64,
    pub(crate) messages: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) keys: AtomicU64,
}

impl Counters {
    pub(crate) fn update(&self, catalog: &Catalog) {
        self.channels
            .store(catalog.channels.len() as u64, Ordering::Relaxed);
        self.forgotten.store(catalog.forgotten, Ordering::Relaxed);
        self.messages.store(catalog.messages, Ordering::Relaxed);
        self.bytes.store(catalog.bytes, Ordering::Relaxed);
        self.keys
            .store(catalog.keys.len() as u64, Ordering::Relaxed);
    }
}

/// Messages to store together, and where to send the outcome.
pub(crate) struct AppendRequest {
    pub(crate) drafts: Vec<MessageDraft>,
    pub(crate) reply: oneshot::Sender<Result<Vec<Appended>, AppendError>>,
    /// Run with what became of the drafts right after the commit, before
    /// the reply (see `Store::append_batch_then`).
    pub(crate) after_commit: Option<AfterCommit>,
}

/// Work for the writer thread.
pub(crate) enum Command {
    /// Store a message.
    Append(AppendRequest),
    /// Apply retention by age now, one step; the reply says whether more
    /// remains. Freed space is given back after the last step.
    Sweep {
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
}

impl Command {
    /// What the command counts for against [`MAX_GROUP`].
    fn size(&self) -> usize {
        match self {
            Command::Append(request) => request.drafts.len(),
            Command::Sweep { .. } => 1,
        }
    }
}

/// The writer's state, owned by its thread.
pub(crate) struct Writer {
    pub(crate) connection: Connection,
    pub(crate) path: PathBuf,
    pub(crate) epoch: Epoch,
    pub(crate) catalog: Catalog,
    pub(crate) retention: Retention,
    pub(crate) idempotency: IdempotencyOptions,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) listener: Arc<Mutex<Option<Arc<dyn CommitListener>>>>,
    /// False while the last commit failed.
    pub(crate) healthy: Arc<AtomicBool>,
    pub(crate) counters: Arc<Counters>,
}

/// An append whose drafts were judged and numbered, waiting for the
/// group's commit.
struct PendingAppend {
    /// What became of each draft (stored messages not yet committed).
    outcomes: Vec<Appended>,
    /// The keys of its stored messages, to remember in the same commit.
    keys: Vec<NewKey>,
    reply: oneshot::Sender<Result<Vec<Appended>, AppendError>>,
    after_commit: Option<AfterCommit>,
}

impl PendingAppend {
    fn messages(&self) -> impl Iterator<Item = &Arc<Message>> {
        self.outcomes.iter().filter_map(|outcome| match outcome {
            Appended::Stored(message) => Some(message),
            Appended::Repeat(_) => None,
        })
    }
}

/// A key to remember with its message.
struct NewKey {
    hash: KeyHash,
    record: KeyRecord,
}

/// What a draft will be, judged before anything is numbered.
#[derive(Clone, Copy)]
enum Planned {
    /// Stored.
    Store,
    /// A repeat of a stored publish.
    Repeat(Original),
}

/// What the drafts of one append will be.
enum Plan {
    /// Every draft is stored: none carries an idempotency key (the common
    /// case, judged without a list).
    AllStored,
    /// Each draft's fate, in the drafts' order.
    Each(Vec<Planned>),
}

impl Plan {
    /// The fate of the draft at `index`.
    fn of(&self, index: usize) -> Planned {
        match self {
            Plan::AllStored => Planned::Store,
            Plan::Each(planned) => planned[index],
        }
    }
}

/// A group: `first`, every command already waiting, and, while it holds
/// fewer than `expected` appends, those arriving within [`GATHER_WAIT`];
/// at most [`MAX_GROUP`] drafts (a batch is never split).
fn gather(commands: &Receiver<Command>, first: Command, expected: usize) -> Vec<Command> {
    let mut size = first.size();
    let mut group = vec![first];
    let deadline = Instant::now() + GATHER_WAIT;
    while size < MAX_GROUP {
        let next = match commands.try_recv() {
            Ok(command) => Some(command),
            Err(TryRecvError::Disconnected) => None,
            Err(TryRecvError::Empty) if appends_in(&group) < expected => {
                let left = deadline.saturating_duration_since(Instant::now());
                commands.recv_timeout(left).ok()
            }
            Err(TryRecvError::Empty) => None,
        };
        let Some(command) = next else { break };
        size += command.size();
        group.push(command);
    }
    group
}

/// How many appends `group` holds.
fn appends_in(group: &[Command]) -> usize {
    group
        .iter()
        .filter(|command| matches!(command, Command::Append(_)))
        .count()
}

/// Keys stored by earlier appends of the group (or drafts of the append),
/// with what they stored.
type DraftedKeys = HashMap<KeyHash, (Fingerprint, Original)>;

impl Writer {
    /// Serves commands until every sender is gone, then closes in order.
    pub(crate) fn run(mut self, commands: Receiver<Command>) {
        let mut expected = 1;
        while let Ok(first) = commands.recv() {
            let group = gather(&commands, first, expected);
            expected = appends_in(&group).max(1);
            self.serve(group);
        }
        self.close();
    }

    fn serve(&mut self, group: Vec<Command>) {
        let mut appends = Vec::with_capacity(group.len());
        let mut sweeps = Vec::new();
        for command in group {
            match command {
                Command::Append(request) => appends.push(request),
                Command::Sweep { reply } => sweeps.push(reply),
            }
        }
        if !appends.is_empty() {
            self.append_group(appends);
        }
        if !sweeps.is_empty() {
            let result = self.sweep().map_err(|error| self.failed("sweeping", error));
            for reply in sweeps {
                let _ = reply.send(result.as_ref().map(|more| *more).map_err(clone_error));
            }
        }
    }

    fn append_group(&mut self, appends: Vec<AppendRequest>) {
        let now = self.clock.now_ms();
        let oldest_key_kept = self.idempotency.oldest_kept_ms(now);
        let mut draft = Draft::new(&self.catalog);
        let mut drafted = DraftedKeys::new();
        let mut pending = Vec::with_capacity(appends.len());
        for request in appends {
            let planned = plan(
                &self.catalog.keys,
                &request.drafts,
                &drafted,
                draft.head,
                oldest_key_kept,
            );
            let planned = match planned {
                Ok(planned) => planned,
                Err(error) => {
                    let _ = request.reply.send(Err(error));
                    continue;
                }
            };
            let stored = (0..request.drafts.len())
                .filter(|&index| matches!(planned.of(index), Planned::Store))
                .count() as u64;
            let room = draft
                .head
                .0
                .checked_add(stored)
                .is_some_and(|last| Seq(last) <= MAX_SEQ);
            if !room {
                let _ = request
                    .reply
                    .send(Err(StoreError::SequenceExhausted.into()));
                continue;
            }
            let mut outcomes = Vec::with_capacity(request.drafts.len());
            let mut keys = Vec::new();
            for (index, message) in request.drafts.into_iter().enumerate() {
                if let Planned::Repeat(original) = planned.of(index) {
                    outcomes.push(Appended::Repeat(original));
                    continue;
                }
                draft.head = Seq(draft.head.0 + 1);
                if let Some(key) = &message.idempotency_key {
                    let hash = KeyHash::of(&message.channel, key);
                    let record = KeyRecord {
                        fingerprint: Fingerprint::of(&message.event, message.data.bytes()),
                        original: Original {
                            seq: draft.head,
                            subscribers: message.subscribers,
                        },
                        at_ms: now,
                    };
                    drafted.insert(hash, (record.fingerprint, record.original));
                    keys.push(NewKey { hash, record });
                }
                outcomes.push(Appended::Stored(Arc::new(Message::new(
                    self.epoch.clone(),
                    draft.head,
                    message.channel,
                    message.event,
                    message.data,
                    now,
                ))));
            }
            pending.push(PendingAppend {
                outcomes,
                keys,
                reply: request.reply,
                after_commit: request.after_commit,
            });
        }
        if pending.is_empty() {
            return;
        }
        let new_keys = pending.iter().map(|append| append.keys.len()).sum();
        let (forgotten_keys, forget_upto) =
            self.catalog
                .keys
                .to_forget(oldest_key_kept, self.idempotency.max_keys, new_keys);
        let outcome = commit_group(
            &self.connection,
            &self.retention,
            &mut draft,
            &pending,
            (forgotten_keys > 0).then_some(forget_upto),
        );
        let changes = draft.finish();
        match outcome {
            Ok(()) => {
                changes.apply(&mut self.catalog);
                self.catalog.keys.forget_oldest(forgotten_keys);
                for key in pending.iter().flat_map(|append| &append.keys) {
                    self.catalog.keys.remember(key.hash, key.record);
                }
                self.counters.update(&self.catalog);
                self.healthy.store(true, Ordering::Release);
                let listener = self
                    .listener
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if let Some(listener) = &listener {
                    for message in pending.iter().flat_map(PendingAppend::messages) {
                        listener.committed(message);
                    }
                }
                // The whole group's work after the commit (for a publish,
                // its answer) in one pass, before any of its callers is
                // woken.
                for append in &mut pending {
                    if let Some(after_commit) = append.after_commit.take() {
                        after_commit(&append.outcomes);
                    }
                }
                for append in pending {
                    let _ = append.reply.send(Ok(append.outcomes));
                }
            }
            Err(error) => {
                let error = self.failed("committing published messages", error);
                for append in pending {
                    let _ = append.reply.send(Err(clone_error(&error).into()));
                }
            }
        }
    }

    /// Removes up to [`SWEEP_STEP`] segments older than the age limit,
    /// store-wide; true if more may remain. After the last step, returns
    /// freed pages to the file system.
    fn sweep(&mut self) -> rusqlite::Result<bool> {
        let oldest_key_kept = self.idempotency.oldest_kept_ms(self.clock.now_ms());
        let (forgotten_keys, forget_upto) =
            self.catalog
                .keys
                .to_forget(oldest_key_kept, self.idempotency.max_keys, 0);
        if forgotten_keys > 0 {
            forget_keys(&self.connection, forget_upto)?;
            self.catalog.keys.forget_oldest(forgotten_keys);
            self.counters.update(&self.catalog);
        }
        if let Some(max_age) = self.retention.max_age {
            let cutoff = self
                .clock
                .now_ms()
                .saturating_sub(max_age.as_millis() as u64);
            let mut draft = Draft::new(&self.catalog);
            let transaction =
                Transaction::new_unchecked(&self.connection, TransactionBehavior::Immediate)?;
            let more = trim_by_age(&transaction, &mut draft, cutoff, SWEEP_STEP)?;
            draft.save(&transaction)?;
            evict_tombstones(&transaction, &mut draft, self.retention.forgotten_channels)?;
            transaction.commit()?;
            draft.finish().apply(&mut self.catalog);
            self.counters.update(&self.catalog);
            if more {
                return Ok(true);
            }
        }
        let free_pages: i64 = self
            .connection
            .query_row("PRAGMA freelist_count", [], |row| row.get(0))?;
        if free_pages > 256 {
            // Each row of the answer is one freed page; reading them runs it.
            let mut vacuum = self.connection.prepare("PRAGMA incremental_vacuum(4096)")?;
            let mut rows = vacuum.query([])?;
            while rows.next()?.is_some() {}
        }
        Ok(false)
    }

    fn failed(&self, what: &str, error: rusqlite::Error) -> StoreError {
        self.healthy.store(false, Ordering::Release);
        tracing::error!(%error, path = %self.path.display(), "{what} failed");
        StoreError::Unavailable(format!("{what} failed: {error}"))
    }

    fn close(self) {
        let closed = self
            .connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .and_then(|()| mark_clean(&self.connection, true));
        if let Err(error) = closed {
            tracing::warn!(%error, "closing the history database");
        }
    }
}

fn clone_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::SequenceExhausted => StoreError::SequenceExhausted,
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Stores one group of appends and their keys, lets go of the keys up to
/// `forget_keys_upto`, and applies retention, in one transaction.
fn commit_group(
    connection: &Connection,
    retention: &Retention,
    draft: &mut Draft<'_>,
    pending: &[PendingAppend],
    forget_keys_upto: Option<Seq>,
) -> rusqlite::Result<()> {
    let transaction = Transaction::new_unchecked(connection, TransactionBehavior::Immediate)?;
    let mut open: HashMap<i64, SegmentBuilder> = HashMap::new();
    let mut full = Vec::new();
    for message in pending.iter().flat_map(PendingAppend::messages) {
        let size = stored_size(message);
        let channel = draft.channel(&transaction, message.channel())?;
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
        segment.insert(&transaction)?;
    }
    if let Some(upto) = forget_keys_upto {
        forget_keys(&transaction, upto)?;
    }
    remember_keys(&transaction, pending)?;
    // Each channel the group appended to, once, in the order first met.
    let mut seen = HashSet::new();
    let touched: Vec<ChannelName> = pending
        .iter()
        .flat_map(PendingAppend::messages)
        .map(|message| message.channel())
        .filter(|name| seen.insert(*name))
        .cloned()
        .collect();
    trim_by_count(&transaction, draft, &touched, retention.max_messages)?;
    if let Some(max_bytes) = retention.max_bytes {
        let newest = draft.head;
        trim_by_bytes(&transaction, draft, max_bytes, newest)?;
    }
    draft.save(&transaction)?;
    evict_tombstones(&transaction, draft, retention.forgotten_channels)?;
    transaction.commit()
}

/// What each draft of an append will be: its key looked up among the keys
/// drafted before it (in this append and this group) and those remembered.
fn plan(
    remembered: &KeyTable,
    drafts: &[MessageDraft],
    group: &DraftedKeys,
    head: Seq,
    oldest_key_kept: u64,
) -> Result<Plan, AppendError> {
    if drafts.iter().all(|draft| draft.idempotency_key.is_none()) {
        return Ok(Plan::AllStored);
    }
    let mut planned = Vec::with_capacity(drafts.len());
    let mut this_append = DraftedKeys::new();
    let mut next = head.0;
    for (index, draft) in drafts.iter().enumerate() {
        let Some(key) = &draft.idempotency_key else {
            next = next.saturating_add(1);
            planned.push(Planned::Store);
            continue;
        };
        let fingerprint = Fingerprint::of(&draft.event, draft.data.bytes());
        let hash = KeyHash::of(&draft.channel, key);
        let lookup = match this_append.get(&hash).or_else(|| group.get(&hash)) {
            Some((earlier, original)) if *earlier == fingerprint => Lookup::Repeat(*original),
            Some(_) => Lookup::Conflict,
            None => Lookup::judge(remembered.get(&hash), fingerprint, oldest_key_kept),
        };
        match lookup {
            Lookup::Repeat(original) => planned.push(Planned::Repeat(original)),
            Lookup::Conflict => return Err(AppendError::IdempotencyConflict { index }),
            Lookup::New => {
                next = next.saturating_add(1);
                let original = Original {
                    seq: Seq(next),
                    subscribers: draft.subscribers,
                };
                this_append.insert(hash, (fingerprint, original));
                planned.push(Planned::Store);
            }
        }
    }
    Ok(Plan::Each(planned))
}

/// Appends the keys of the group's stored messages.
fn remember_keys(transaction: &Transaction<'_>, pending: &[PendingAppend]) -> rusqlite::Result<()> {
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
fn forget_keys(connection: &Connection, upto: Seq) -> rusqlite::Result<()> {
    connection
        .prepare_cached("DELETE FROM idempotency_keys WHERE seq <= ?1")?
        .execute([upto.0 as i64])
        .map(drop)
}

#[cfg(test)]
mod tests {
    //! How a group gathers (see the module docs). Only lower bounds of time
    //! are asserted: a busy machine may make anything slower, never faster.

    use std::sync::mpsc::channel;

    use super::*;

    fn append() -> Command {
        let (reply, _) = oneshot::channel();
        Command::Append(AppendRequest {
            drafts: Vec::new(),
            reply,
            after_commit: None,
        })
    }

    #[test]
    fn a_group_takes_every_waiting_command_without_waiting_for_more() {
        let (send, commands) = channel();
        for _ in 0..3 {
            send.send(append()).unwrap();
        }
        let group = gather(&commands, append(), 4);
        assert_eq!(appends_in(&group), 4);
        let group = gather(&commands, append(), 1);
        assert_eq!(appends_in(&group), 1, "nothing was waiting");
    }

    #[test]
    fn a_group_smaller_than_the_last_waits_for_the_rest_but_not_forever() {
        let (_send, commands) = channel();
        let started = Instant::now();
        let group = gather(&commands, append(), 8);
        assert_eq!(appends_in(&group), 1);
        assert!(started.elapsed() >= GATHER_WAIT, "{:?}", started.elapsed());
    }
}
