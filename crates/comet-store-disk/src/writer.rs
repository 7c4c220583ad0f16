//! The writer: one thread that owns the write connection and commits
//! appends in groups.
//!
//! Publishers send their appends over a channel and wait for the reply. The
//! thread takes the first waiting append, then every other one already
//! waiting (up to [`MAX_GROUP`]), numbers them, stores them (a segment
//! row per channel, see `segment`) and applies retention, writes the group
//! to the journal and syncs it (one sync for the whole group, see
//! `journal`), hands it to the readers' tail (see `tail`), tells the commit
//! listener of each message in order, and only then replies. While a
//! group is synced, the next one gathers: the busier the store, the larger
//! the groups, and durability costs one sync per group rather than per
//! message.
//!
//! SQLite itself commits less often: the groups' statements run in one
//! transaction, committed with `synchronous=FULL` once no command came for
//! `DiskOptions::commit_when_idle`, once the journal holds
//! [`JOURNAL_COMMIT_BYTES`] (or [`JOURNAL_COMMIT_BYTES_PER_CHANNEL`] for
//! each channel appended to since the last commit, if that is more), once
//! it has been open for `DiskOptions::commit_every`, and before a sweep or
//! the close. Each commit writes the pages the groups changed once, not
//! once per group; then the journal starts again. A group or a commit that
//! fails rolls the whole transaction back, and the journal's groups are
//! stored again (see [`Writer::abandon_open`]), as at start, where the
//! journal's groups beyond the database's head are stored again (see
//! [`Writer::replay`]).
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

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use comet_protocol::{Epoch, Message, Seq};
use comet_store::idempotency::{DraftedKeys, Fingerprint, KeyHash, KeyRecord, Planned, plan};
use comet_store::{
    AfterCommit, AppendError, Appended, Clock, CommitListener, Draft as MessageDraft,
    IdempotencyOptions, Original, Retention, SharedFootprint, StoreError,
};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use crate::checkpoint::{Checkpointer, LogPages};
use crate::database::{Catalog, MAX_SEQ, mark_clean};
use crate::draft::Draft;
use crate::group::{GroupError, NewKey, PendingAppend, forget_keys, store_group, store_statements};
use crate::journal::{Journal, JournalGroup, PREALLOCATED};
use crate::retention::{evict_tombstones, trim_by_age};
use crate::tail::SharedTail;

/// The most messages committed together: appends are gathered into a
/// group until it holds this many drafts (a batch is never split, so a
/// group of one large batch may hold more).
pub(crate) const MAX_GROUP: usize = 1024;

/// The longest a group waits for the appends the last group suggests are
/// on their way (see the module docs).
pub(crate) const GATHER_WAIT: Duration = Duration::from_micros(200);

/// The pages SQLite's log may hold (about 4 MiB of 4 KiB pages) past
/// which the writer checkpoints it whole after a commit, so that it starts
/// again (see `Writer::checkpoint`).
pub(crate) const LOG_RESET_PAGES: i32 = 1024;

/// The journal bytes past which SQLite's transaction is committed at once,
/// when few channels were appended to since the last commit.
pub(crate) const JOURNAL_COMMIT_BYTES: u64 = 256 * 1024;

/// The journal bytes per channel appended to since the last commit past
/// which SQLite's transaction is committed, when that is more than
/// [`JOURNAL_COMMIT_BYTES`] (at most the journal's preallocated length).
pub(crate) const JOURNAL_COMMIT_BYTES_PER_CHANNEL: u64 = 2 * 1024;

/// Most expired segments one sweep transaction removes.
pub(crate) const SWEEP_STEP: usize = 1024;

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
    /// How much SQLite's write-ahead log holds, told after each commit.
    pub(crate) log: LogPages,
    pub(crate) epoch: Epoch,
    pub(crate) catalog: Catalog,
    pub(crate) retention: Retention,
    pub(crate) idempotency: IdempotencyOptions,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) listener: Arc<Mutex<Option<Arc<dyn CommitListener>>>>,
    /// False while the last commit failed.
    pub(crate) healthy: Arc<AtomicBool>,
    /// What the store holds, as of the last group (read by `footprint`).
    pub(crate) footprint: Arc<SharedFootprint>,
    pub(crate) journal: Journal,
    pub(crate) tail: SharedTail,
    /// When SQLite's open transaction began; `None` while none is open.
    pub(crate) open_since: Option<Instant>,
    /// The longest SQLite's transaction stays open.
    pub(crate) commit_every: Duration,
    /// How long an open transaction waits for the next command.
    pub(crate) commit_when_idle: Duration,
    /// Checkpoints SQLite's log after commits, beside the writer.
    pub(crate) checkpointer: Option<Checkpointer>,
    /// True while a failed group or commit could not be followed by storing
    /// the journal's groups again: the catalog may then be behind what was
    /// acknowledged, so nothing is numbered until that succeeds.
    pub(crate) unsettled: bool,
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

/// The journal bytes past which SQLite commits, when `channels` were
/// appended to since the last commit. A commit writes at least a page for
/// each of them however few messages each got, so the more channels, the
/// more groups a commit is worth: [`JOURNAL_COMMIT_BYTES_PER_CHANNEL`] each,
/// between [`JOURNAL_COMMIT_BYTES`] and the journal's preallocated length.
fn commit_threshold(channels: usize) -> u64 {
    (channels as u64)
        .saturating_mul(JOURNAL_COMMIT_BYTES_PER_CHANNEL)
        .clamp(JOURNAL_COMMIT_BYTES, PREALLOCATED)
}

/// How many appends `group` holds.
fn appends_in(group: &[Command]) -> usize {
    group
        .iter()
        .filter(|command| matches!(command, Command::Append(_)))
        .count()
}

impl Writer {
    /// Serves commands until every sender is gone, then closes in order.
    pub(crate) fn run(mut self, commands: Receiver<Command>) {
        let mut expected = 1;
        loop {
            let first = match self.open_since {
                None => commands.recv().ok(),
                Some(since) => {
                    // Committed once idle, or once open too long.
                    let idle = Instant::now() + self.commit_when_idle;
                    let deadline = idle.min(since + self.commit_every);
                    let left = deadline.saturating_duration_since(Instant::now());
                    match commands.recv_timeout(left) {
                        Ok(command) => Some(command),
                        Err(RecvTimeoutError::Timeout) => {
                            self.commit_open();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => None,
                    }
                }
            };
            let Some(first) = first else { break };
            let group = gather(&commands, first, expected);
            expected = appends_in(&group).max(1);
            self.serve(group);
            let due = self
                .open_since
                .is_some_and(|since| since.elapsed() >= self.commit_every)
                || self.journal.written() >= self.commit_bytes();
            if due {
                self.commit_open();
            }
        }
        self.close();
    }

    /// The journal bytes past which SQLite commits (see
    /// [`commit_threshold`]).
    fn commit_bytes(&self) -> u64 {
        commit_threshold(self.tail.channels_appended())
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
            self.commit_open();
            let result = self
                .settle()
                .and_then(|()| self.sweep().map_err(|error| self.failed("sweeping", error)));
            self.nudge_checkpointer();
            for reply in sweeps {
                let _ = reply.send(result.as_ref().map(|more| *more).map_err(clone_error));
            }
        }
    }

    /// After a failed write whose journal could not be stored again, tries
    /// that again: an error while it still fails (nothing is numbered or
    /// swept until it succeeds).
    fn settle(&mut self) -> Result<(), StoreError> {
        if self.unsettled {
            self.abandon_open();
        }
        if self.unsettled {
            return Err(StoreError::Unavailable(
                "the history could not store its journal again after a failed write".into(),
            ));
        }
        Ok(())
    }

    fn append_group(&mut self, appends: Vec<AppendRequest>) {
        if let Err(error) = self.settle() {
            for request in appends {
                let _ = request.reply.send(Err(clone_error(&error).into()));
            }
            return;
        }
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
            let stored = planned.stored(request.drafts.len()) as u64;
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
        let outcome = begin(&self.connection, &mut self.open_since).and_then(|()| {
            store_group(
                &self.connection,
                &mut self.journal,
                &self.retention,
                &mut draft,
                &pending,
                (forgotten_keys > 0).then_some(forget_upto),
            )
        });
        let changes = draft.finish();
        match outcome {
            Ok(()) => {
                self.tail.stored(
                    changes.channels(),
                    pending.iter().flat_map(PendingAppend::messages),
                );
                changes.apply(&mut self.catalog);
                self.catalog.keys.forget_oldest(forgotten_keys);
                for key in pending.iter().flat_map(|append| &append.keys) {
                    self.catalog.keys.remember(key.hash, key.record);
                }
                self.footprint.store(self.catalog.footprint());
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
                let error = self.failed("storing published messages", error);
                for append in pending {
                    let _ = append.reply.send(Err(clone_error(&error).into()));
                }
                self.abandon_open();
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
            self.footprint.store(self.catalog.footprint());
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
            self.footprint.store(self.catalog.footprint());
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

    /// Commits SQLite's open transaction, if any, and starts the journal
    /// and the tail again from the new head. If the commit fails, the
    /// transaction is rolled back and the groups stored again from the
    /// journal (see [`Writer::reload`]): nothing acknowledged is let go.
    pub(crate) fn commit_open(&mut self) {
        if self.open_since.take().is_none() {
            return;
        }
        let committed = self.connection.execute_batch("COMMIT");
        if let Err(error) = committed {
            let _ = self.failed("committing the history", GroupError::Sqlite(error));
            self.abandon_open();
            return;
        }
        if let Err(error) = self.journal.restart() {
            tracing::warn!(%error, "starting the journal again");
        }
        self.tail.committed(self.catalog.head);
        self.checkpoint();
    }

    /// Checkpoints SQLite's log after a commit: beside the writer, by the
    /// checkpointer, unless the log holds more than [`LOG_RESET_PAGES`].
    /// The log starts again from its beginning only when a transaction
    /// begins after a complete checkpoint, and the writer begins its next
    /// one at once, so under steady appends the checkpointer never gets
    /// there in time: the writer then checkpoints it whole itself, and the
    /// log starts again from its beginning, written over in place.
    fn checkpoint(&self) {
        let grown = self.log.held() > LOG_RESET_PAGES;
        if !grown {
            self.nudge_checkpointer();
            return;
        }
        let restarted = self
            .connection
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
        if let Err(error) = restarted {
            tracing::warn!(%error, "checkpointing the history");
        }
    }

    fn nudge_checkpointer(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.nudge();
        }
    }

    /// Rolls SQLite's open transaction back, if one is open, and stores
    /// the journal's groups again: after a group or a commit failed. If
    /// that fails too, what it stored is rolled back as well (a commit of
    /// part of it would start the journal again without the rest), and
    /// the writer stays unsettled until the next append tries again.
    fn abandon_open(&mut self) {
        self.roll_back();
        let reloaded = self.reload();
        self.unsettled = reloaded.is_err();
        if let Err(error) = reloaded {
            self.roll_back();
            let _ = self.failed("storing the journal's groups again", error);
        }
    }

    fn roll_back(&mut self) {
        self.open_since = None;
        if !self.connection.is_autocommit() {
            let _ = self.connection.execute_batch("ROLLBACK");
        }
    }

    /// Makes the catalog what the database holds again and stores the
    /// journal's groups beyond it: after a failed group or commit.
    fn reload(&mut self) -> Result<(), GroupError> {
        let loaded = crate::database::load(&self.connection, &self.path)
            .map_err(|error| GroupError::Recovery(error.to_string()))?;
        self.catalog = loaded.catalog;
        let groups = self.journal.read()?;
        self.replay(groups)
    }

    /// Stores again, and commits, the journal's groups beyond the
    /// database's head (those at or below it are in the database).
    pub(crate) fn replay(&mut self, groups: Vec<JournalGroup>) -> Result<(), GroupError> {
        let mut replayed = 0usize;
        for group in groups {
            let Some(first) = group.messages.first() else {
                continue;
            };
            if first.seq() <= self.catalog.head {
                continue;
            }
            if first.seq().0 != self.catalog.head.0 + 1 {
                return Err(GroupError::Recovery(format!(
                    "the journal continues at {} but the history's head is {}",
                    first.seq(),
                    self.catalog.head
                )));
            }
            let mut keys = group.keys;
            let pending = PendingAppend {
                outcomes: group.messages.into_iter().map(Appended::Stored).collect(),
                keys: keys
                    .drain(..)
                    .map(|(hash, record)| NewKey { hash, record })
                    .collect(),
                reply: oneshot::channel().0,
                after_commit: None,
            };
            let pending = [pending];
            let mut draft = Draft::new(&self.catalog);
            draft.head = pending[0].messages().last().map_or(draft.head, |m| m.seq());
            begin(&self.connection, &mut self.open_since)?;
            store_statements(
                &self.connection,
                &self.retention,
                &mut draft,
                &pending,
                None,
            )?;
            let changes = draft.finish();
            changes.apply(&mut self.catalog);
            for key in &pending[0].keys {
                self.catalog.keys.remember(key.hash, key.record);
            }
            replayed += 1;
        }
        if self.open_since.take().is_some() {
            self.connection.execute_batch("COMMIT")?;
        }
        self.journal.restart()?;
        self.tail.committed(self.catalog.head);
        self.footprint.store(self.catalog.footprint());
        if replayed > 0 {
            tracing::info!(
                groups = replayed,
                head = self.catalog.head.0,
                "stored the journal's groups the history had not committed"
            );
        }
        Ok(())
    }

    fn failed(&self, what: &str, error: impl std::fmt::Display) -> StoreError {
        self.healthy.store(false, Ordering::Release);
        tracing::error!(%error, path = %self.path.display(), "{what} failed");
        StoreError::Unavailable(format!("{what} failed: {error}"))
    }

    fn close(mut self) {
        self.commit_open();
        // Its checkpoint in progress ends first.
        self.checkpointer.take();
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
        StoreError::Unavailable(reason) => StoreError::Unavailable(reason.clone()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Opens SQLite's transaction if none is open (`open_since` says when it
/// began).
fn begin(connection: &Connection, open_since: &mut Option<Instant>) -> Result<(), GroupError> {
    if open_since.is_none() {
        connection.execute_batch("BEGIN IMMEDIATE")?;
        *open_since = Some(Instant::now());
    }
    Ok(())
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
    fn the_more_channels_a_commit_covers_the_later_it_comes_within_the_journal() {
        assert_eq!(commit_threshold(0), JOURNAL_COMMIT_BYTES);
        assert_eq!(commit_threshold(1), JOURNAL_COMMIT_BYTES);
        assert_eq!(commit_threshold(128), JOURNAL_COMMIT_BYTES);
        assert_eq!(commit_threshold(256), 2 * JOURNAL_COMMIT_BYTES);
        assert_eq!(commit_threshold(1024), PREALLOCATED);
        assert_eq!(commit_threshold(5000), PREALLOCATED);
        assert_eq!(commit_threshold(usize::MAX), PREALLOCATED);
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
