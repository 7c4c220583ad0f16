//! The checkpointer: copies what SQLite committed to its write-ahead log
//! into the database file, on a thread of its own.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold, so the writer would copy pages and wait for the database
//! file's sync while every publisher waits for it. The writer's connection
//! turns it off (`database::configure_writer`) and nudges this thread after
//! each commit instead; the checkpoint (`PASSIVE`: it never blocks the
//! writer) runs beside the next groups. Durability does not depend on it:
//! a commit is synced in the log, and the journal holds everything since.
//!
//! [`LogPages`] is how the writer knows how much the log holds: a `PASSIVE`
//! checkpoint never lets the log start again while the writer keeps
//! committing, so past a bound the writer checkpoints it whole itself.

use std::ffi::c_int;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use rusqlite::Connection;
use rusqlite::hooks::Wal;

use crate::database::connect;
use crate::directory::OpenError;

/// The checkpointing thread, stopped and joined when dropped.
pub(crate) struct Checkpointer {
    nudges: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread, with a connection of its own to `path`.
    pub(crate) fn start(path: &Path) -> Result<Self, OpenError> {
        let connection = connect(path)?;
        let (nudges, received) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("comet-history-checkpoint".into())
            .spawn(move || run(&connection, &received))
            .map_err(|source| OpenError::Io {
                what: "starting the history checkpointer".into(),
                source,
            })?;
        Ok(Self {
            nudges: Some(nudges),
            thread: Some(thread),
        })
    }

    /// Asks for a checkpoint; one already asked for and not begun covers
    /// this one too.
    pub(crate) fn nudge(&self) {
        if let Some(nudges) = &self.nudges {
            match nudges.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => {
                    tracing::warn!("the history checkpointer has stopped");
                }
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.nudges.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How many pages SQLite's write-ahead log holds after the last commit on
/// one connection, as SQLite tells it after each commit (its WAL hook).
/// This is what was written since the log last started again, not the
/// file's length: a log that starts again is written over in place, and
/// its file keeps the length it had grown to.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogPages(Arc<AtomicI32>);

impl LogPages {
    /// Watches the commits of `connection` (replacing SQLite's automatic
    /// checkpoints, which are off on the writer's connection anyway).
    pub(crate) fn watch(connection: &mut Connection) -> rusqlite::Result<Self> {
        let pages = Self::default();
        let told = pages.0.clone();
        connection.wal_hook(Some(move |_: &mut Wal, held: c_int| {
            told.store(held, Ordering::Relaxed);
            Ok(())
        }))?;
        Ok(pages)
    }

    /// The pages the log held after the last commit (none before one).
    pub(crate) fn held(&self) -> i32 {
        self.0.load(Ordering::Relaxed)
    }
}

fn run(connection: &Connection, nudges: &Receiver<()>) {
    while nudges.recv().is_ok() {
        let checkpointed = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        if let Err(error) = checkpointed {
            tracing::warn!(%error, "checkpointing the history");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_length(directory: &Path) -> u64 {
        std::fs::metadata(directory.join("log.db-wal")).map_or(0, |file| file.len())
    }

    #[test]
    fn the_pages_held_are_what_the_log_holds_since_it_started_again_not_its_file() {
        let directory =
            std::env::temp_dir().join(format!("comet-log-pages-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("log.db");
        let _ = std::fs::remove_file(&path);
        let mut connection = Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE blobs (data BLOB);",
            )
            .unwrap();
        let pages = LogPages::watch(&mut connection).unwrap();
        let insert = |count: usize| {
            let transaction = connection.unchecked_transaction().unwrap();
            for _ in 0..count {
                transaction
                    .execute("INSERT INTO blobs VALUES (?1)", [vec![7u8; 4000]])
                    .unwrap();
            }
            transaction.commit().unwrap();
        };

        insert(256);
        let grown = pages.held();
        assert!(grown >= 256, "a page or more per row: {grown}");
        assert!(log_length(&directory) > 256 * 4096);

        // A checkpoint that restarts the log; the next commit writes it over
        // from its beginning, and its file keeps its length.
        connection
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
            .unwrap();
        insert(1);
        let held = pages.held();
        assert!(held < 8, "one row since the log started again: {held}");
        assert!(
            log_length(&directory) > 256 * 4096,
            "the file kept its length"
        );

        drop(connection);
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
