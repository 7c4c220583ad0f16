//! Comet's durable history store: the default behind `comet serve`.
//!
//! A [`DiskStore`] keeps channel history in a data directory (see
//! `directory`) holding one SQLite database in WAL mode (see `database`)
//! and a journal in front of it (see `journal`). Why SQLite, and the
//! measurements behind the choice, are in `docs/design.md`.
//!
//! Guarantees:
//! - **Acknowledged means on disk.** `append` returns only after the
//!   group holding the message was written to the journal and synced.
//!   Concurrent appends share one record and one sync (group commit, see
//!   `writer`). SQLite commits many groups at a time, with
//!   `synchronous=FULL`; readers see the groups it has not committed yet
//!   through the writer's tail (see `tail`), and a thread of its own
//!   checkpoints SQLite's log (see `checkpoint`).
//! - **Restarts continue the history.** The epoch and the sequence are
//!   stored; ids after a restart follow the ids before it.
//! - **Bounded on disk.** Retention by count per channel, by age, and by
//!   total bytes is applied in the same transactions as appends (and by the
//!   sweeper for age), and freed pages are given back to the file system.
//!   Idempotency keys are bounded by their window and their count, the
//!   same way.
//! - **A batch is one commit.** Its messages and their keys are stored
//!   together or not at all, and a retry with a key is answered with the
//!   original (the key is looked up by the writer, which serves one append
//!   at a time, so two racing retries store one message).
//! - **Crash-safe.** After a crash SQLite discards any torn tail of its
//!   write-ahead log by checksum, and the journal any torn record; on an
//!   unclean start the store also checks the database's structure, then
//!   stores the journal's groups beyond the database's head again before
//!   serving. Nothing acknowledged is lost.
//! - **One server per directory,** enforced by a lock; unknown, foreign or
//!   newer formats are refused without writing anything.

mod checkpoint;
mod database;
mod directory;
mod draft;
mod group;
mod journal;
mod reader;
mod retention;
mod segment;
mod tail;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use checkpoint::{Checkpointer, LogPages};
use comet_protocol::{ChannelName, Epoch, Message, Seq};
use comet_store::{
    AfterCommit, AppendError, Appended, ChannelSummary, CommitListener, Draft, Footprint, History,
    ReadLimit, SharedFootprint, Store, StoreError, StoreOptions, new_epoch,
};
pub use directory::OpenError;
use directory::{DataDirectory, Found};
use journal::Journal;
use reader::Readers;
use tail::SharedTail;
use tokio::sync::oneshot;
use writer::{AppendRequest, Command, Writer};

/// The durable store. Dropping it finishes pending writes and closes the
/// database in order.
pub struct DiskStore {
    epoch: Epoch,
    head: Arc<std::sync::atomic::AtomicU64>,
    commands: Option<Sender<Command>>,
    writer: Option<JoinHandle<()>>,
    readers: Arc<Readers>,
    listener: Arc<Mutex<Option<Arc<dyn CommitListener>>>>,
    healthy: Arc<AtomicBool>,
    footprint: Arc<SharedFootprint>,
    _directory: DataDirectory,
}

/// The sequence number announced last, kept current by a listener that
/// wraps the installed one.
struct HeadTracker {
    head: Arc<std::sync::atomic::AtomicU64>,
    inner: Option<Arc<dyn CommitListener>>,
}

impl CommitListener for HeadTracker {
    fn committed(&self, message: &Arc<Message>) {
        self.head.store(message.seq().0, Ordering::Release);
        if let Some(inner) = &self.inner {
            inner.committed(message);
        }
    }
}

/// Settings of the durable store beyond [`StoreOptions`].
#[derive(Clone, Debug)]
pub struct DiskOptions {
    /// The longest the writer keeps SQLite's transaction open while
    /// appends keep coming (it commits sooner once idle, or once the
    /// journal has grown): groups in between are durable in the journal
    /// (see the crate docs), and the readers see them in memory. One
    /// second by default.
    pub commit_every: Duration,
    /// How long the writer waits for another append before it commits
    /// SQLite's open transaction. 10 ms by default.
    pub commit_when_idle: Duration,
}

impl Default for DiskOptions {
    fn default() -> Self {
        Self {
            commit_every: Duration::from_secs(1),
            commit_when_idle: Duration::from_millis(10),
        }
    }
}

impl DiskStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Self, OpenError> {
        Self::open_with(dir, options, DiskOptions::default())
    }

    /// Opens (or creates) the store in `dir`, with `disk`'s settings.
    pub fn open_with(
        dir: &Path,
        options: StoreOptions,
        disk: DiskOptions,
    ) -> Result<Self, OpenError> {
        let started = Instant::now();
        let (directory, found) = DataDirectory::open(dir)?;
        let path = directory.database();
        let mut created = None;
        if found == Found::Fresh {
            let mut connection = database::connect(&path)?;
            database::initialize(&mut connection, &new_epoch())?;
            created = Some(connection);
        }
        // Look (and, after a crash, check) before writing anything.
        let loaded = {
            let look = database::connect_read_only(&path)?;
            let loaded = database::load(&look, &path)?;
            if loaded.unclean {
                tracing::warn!(
                    path = %path.display(),
                    "the previous run stopped without closing the history (a crash or a kill); \
                     recovering: committed messages are kept, an unfinished write is discarded"
                );
                database::quick_check(&look, &path)?;
            }
            loaded
        };
        let mut connection = match created {
            Some(connection) => connection,
            None => database::connect(&path)?,
        };
        database::configure_writer(&connection)?;
        let log = LogPages::watch(&mut connection).map_err(|source| OpenError::Sqlite {
            what: "watching the history's log".into(),
            source,
        })?;
        database::upgrade(&mut connection)?;
        database::mark_clean(&connection, false).map_err(|source| OpenError::Sqlite {
            what: "marking the history open".into(),
            source,
        })?;
        let epoch = loaded.epoch;
        let journal_path = directory.journal();
        let journal_error = |error: journal::JournalError| OpenError::Io {
            what: format!("opening the journal {}", journal_path.display()),
            source: std::io::Error::other(error.to_string()),
        };
        let (journal, groups) = Journal::open(&journal_path, &epoch).map_err(journal_error)?;
        tracing::info!(
            path = %path.display(),
            epoch = %epoch,
            head = loaded.catalog.head.0,
            channels = loaded.catalog.channels.len(),
            forgotten_channels = loaded.catalog.forgotten,
            idempotency_keys = loaded.catalog.keys.len(),
            bytes = loaded.catalog.bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "history opened"
        );

        let head = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let listener: Arc<Mutex<Option<Arc<dyn CommitListener>>>> =
            Arc::new(Mutex::new(Some(Arc::new(HeadTracker {
                head: head.clone(),
                inner: None,
            }))));
        let healthy = Arc::new(AtomicBool::new(true));
        let footprint = Arc::new(SharedFootprint::default());
        footprint.store(loaded.catalog.footprint());
        let tail = SharedTail::new(loaded.catalog.head);
        let mut writer = Writer {
            connection,
            path: path.clone(),
            log,
            epoch: epoch.clone(),
            catalog: loaded.catalog,
            retention: options.retention.clone(),
            idempotency: options.idempotency,
            clock: options.clock.clone(),
            listener: listener.clone(),
            healthy: healthy.clone(),
            footprint: footprint.clone(),
            journal,
            tail: tail.clone(),
            open_since: None,
            unsettled: false,
            commit_every: disk.commit_every,
            commit_when_idle: disk.commit_when_idle,
            checkpointer: Some(Checkpointer::start(&path)?),
        };
        writer.replay(groups).map_err(|error| OpenError::Io {
            what: format!(
                "storing the groups of the journal {} again",
                journal_path.display()
            ),
            source: std::io::Error::other(error.to_string()),
        })?;
        head.store(writer.catalog.head.0, Ordering::Release);
        let (commands, received) = std::sync::mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("comet-history-writer".into())
            .spawn(move || writer.run(received))
            .map_err(|source| OpenError::Io {
                what: "starting the history writer".into(),
                source,
            })?;
        Ok(Self {
            readers: Arc::new(Readers::new(
                path,
                epoch.clone(),
                options.retention,
                options.clock,
                tail,
            )),
            epoch,
            head,
            commands: Some(commands),
            writer: Some(writer),
            listener,
            healthy,
            footprint,
            _directory: directory,
        })
    }

    /// Hands `drafts` to the writer, with the work to run right after
    /// their commit, and waits for the outcome.
    async fn append_to_writer(
        &self,
        drafts: Vec<Draft>,
        after_commit: Option<AfterCommit>,
    ) -> Result<Vec<Appended>, AppendError> {
        if drafts.is_empty() {
            if let Some(after_commit) = after_commit {
                after_commit(&[]);
            }
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Append(AppendRequest {
            drafts,
            reply,
            after_commit,
        }))?;
        answer.await.map_err(stopped)?
    }

    fn send(&self, command: Command) -> Result<(), StoreError> {
        self.commands
            .as_ref()
            .and_then(|commands| commands.send(command).ok())
            .ok_or_else(|| StoreError::Unavailable("the history writer has stopped".into()))
    }
}

fn stopped(_: oneshot::error::RecvError) -> StoreError {
    StoreError::Unavailable("the history writer stopped before answering".into())
}

#[async_trait]
impl Store for DiskStore {
    fn epoch(&self) -> Epoch {
        self.epoch.clone()
    }

    fn head(&self) -> Seq {
        Seq(self.head.load(Ordering::Acquire))
    }

    fn set_commit_listener(&self, listener: Arc<dyn CommitListener>) {
        *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(HeadTracker {
            head: self.head.clone(),
            inner: Some(listener),
        }));
    }

    async fn append_batch(&self, drafts: Vec<Draft>) -> Result<Vec<Appended>, AppendError> {
        self.append_to_writer(drafts, None).await
    }

    async fn append_batch_then(
        &self,
        drafts: Vec<Draft>,
        after_commit: AfterCommit,
    ) -> Result<Vec<Appended>, AppendError> {
        self.append_to_writer(drafts, Some(after_commit)).await
    }

    fn runs_after_commit_at_commit(&self) -> bool {
        true
    }

    async fn read(
        &self,
        channel: &ChannelName,
        after: Seq,
        upto: Seq,
        limit: ReadLimit,
    ) -> Result<History, StoreError> {
        self.readers.read(channel.clone(), after, upto, limit).await
    }

    async fn backlog_start(
        &self,
        channel: &ChannelName,
        count: usize,
        upto: Seq,
    ) -> Result<Seq, StoreError> {
        self.readers
            .backlog_start(channel.clone(), count, upto)
            .await
    }

    async fn summary(&self, channel: &ChannelName) -> Result<Option<ChannelSummary>, StoreError> {
        self.readers.summary(channel.clone()).await
    }

    async fn channels(
        &self,
        after: Option<&ChannelName>,
        limit: usize,
    ) -> Result<Vec<(ChannelName, ChannelSummary)>, StoreError> {
        self.readers
            .channels(after.map(|name| name.to_string()), limit)
            .await
    }

    async fn enforce_retention(&self) -> Result<(), StoreError> {
        // One step per command: appends sent meanwhile are served between
        // the steps.
        loop {
            let (reply, answer) = oneshot::channel();
            self.send(Command::Sweep { reply })?;
            if !answer.await.map_err(stopped)?? {
                return Ok(());
            }
        }
    }

    fn footprint(&self) -> Footprint {
        self.footprint.load()
    }

    async fn check_health(&self) -> Result<(), StoreError> {
        let writer_alive = self
            .writer
            .as_ref()
            .is_some_and(|writer| !writer.is_finished());
        if !writer_alive {
            return Err(StoreError::Unavailable(
                "the history writer has stopped".into(),
            ));
        }
        if !self.healthy.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable(
                "the last write to the history failed".into(),
            ));
        }
        Ok(())
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer after the writes in flight.
        self.commands.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}
