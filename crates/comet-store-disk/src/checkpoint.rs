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

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use rusqlite::Connection;

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

fn run(connection: &Connection, nudges: &Receiver<()>) {
    while nudges.recv().is_ok() {
        let checkpointed = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        if let Err(error) = checkpointed {
            tracing::warn!(%error, "checkpointing the history");
        }
    }
}
