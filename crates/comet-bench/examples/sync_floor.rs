//! The floor under a durable publish on this machine: a server that does
//! nothing but what any server acknowledging after an fsync must do. One
//! thread serves every connection (a single-threaded event loop, no hand-off
//! between threads): it reads the HTTP requests that have arrived, writes
//! their bodies into a preallocated log file in place (whole 4 KiB pages, as
//! SQLite rewrites its write-ahead log), syncs it once for the group, and
//! only then answers `201` to each. No parsing beyond the headers, no
//! storage engine, no hub: `comet bench publish` against it measures how
//! many acknowledged publishes per second the disk, the loopback network
//! and the kernel allow, the bound Comet's durable store is compared with
//! in `bench/README.md`.
//!
//! An optional third argument writes at least that many pages per group,
//! to measure what a storage format that writes more than the messages
//! (SQLite's b-tree pages, its indexes) costs at the sync.
//!
//! Like Comet's writer, a group that finds fewer requests waiting than the
//! last group held waits for the missing ones, at most 200 µs (here by
//! yielding to the connections, so the thread stays busy), and a lone
//! client never waits.
//!
//! By default the write and the sync block the one thread, which is the
//! cheapest a server can be but no way to serve anyone else meanwhile.
//! With `--writer-thread` they run on a thread of their own, as Comet's
//! writer does, and the event loop goes on reading requests (and would go
//! on serving subscribers) while a group syncs: the floor for a server
//! that keeps serving during its syncs, with the hand-off between the two
//! threads that this costs (one group in flight at a time).
//!
//! With `--answer-at-once` it stores nothing and answers each request as
//! soon as it is read, as a memory store would: the same server without
//! its durable part, to tell what acknowledging after a group's sync
//! costs the serving thread itself.
//!
//! ```text
//! cargo run --release -p comet-bench --example sync_floor -- 127.0.0.1:18841 /data/floor.log [PAGES] [--writer-thread | --answer-at-once]
//! comet bench publish --server http://127.0.0.1:18841 --publishers 8 --duration 6s
//! ```

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

#[path = "floors/request.rs"]
mod request;
use request::read_request;

/// Size of the log file, rewritten from its start when full.
const LOG_BYTES: u64 = 4 << 20;
/// Page size: every group writes whole pages.
const PAGE: usize = 4096;
/// Longest a group waits for the requests the last group held.
const GATHER_WAIT: Duration = Duration::from_micros(200);

/// A request waiting for its group's sync: its body and where to say done.
struct Waiting {
    body: Vec<u8>,
    done: oneshot::Sender<()>,
}

/// Requests not yet written, and what the committer waits on.
#[derive(Default)]
struct Queue {
    waiting: RefCell<Vec<Waiting>>,
    arrived: Notify,
}

fn main() -> std::io::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let writer_thread = match args.iter().position(|arg| arg == "--writer-thread") {
        Some(at) => {
            args.remove(at);
            true
        }
        None => false,
    };
    let at_once = match args.iter().position(|arg| arg == "--answer-at-once") {
        Some(at) => {
            args.remove(at);
            true
        }
        None => false,
    };
    let mut args = args.into_iter();
    let (Some(listen), Some(path)) = (args.next(), args.next()) else {
        eprintln!(
            "usage: sync_floor LISTEN_ADDRESS LOG_FILE [PAGES_PER_GROUP] [--writer-thread | --answer-at-once]"
        );
        std::process::exit(2);
    };
    let min_pages = match args.next().map(|pages| pages.parse::<usize>()) {
        None => 1,
        Some(Ok(pages)) if pages >= 1 => pages,
        Some(_) => {
            eprintln!("PAGES_PER_GROUP must be a whole number of at least 1");
            std::process::exit(2);
        }
    };
    let log = Log::new(preallocated_log(&path)?, writer_thread);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let queue = Rc::new(Queue::default());
        tokio::task::spawn_local(commit_forever(Rc::clone(&queue), log, min_pages));
        let listener = TcpListener::bind(&listen).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            // A client that goes away ends its connection; nothing else to do.
            tokio::task::spawn_local(serve_connection(stream, Rc::clone(&queue), at_once));
        }
    })
}

/// The log file, written full once and synced, so that every later write
/// overwrites allocated blocks and a sync flushes data only.
fn preallocated_log(path: &str) -> std::io::Result<File> {
    let log = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?;
    log.write_all_at(&vec![0u8; LOG_BYTES as usize], 0)?;
    log.sync_all()?;
    Ok(log)
}

/// Where the committer's pages are written and synced: on its own thread
/// (blocking it), or on a writer thread that it waits for.
enum Log {
    Inline(File),
    Writer(std::sync::mpsc::Sender<Write>),
}

/// A group's pages for the writer thread: the bytes, where they go, and
/// where to hand the buffer back once they are synced.
type Write = (Vec<u8>, u64, oneshot::Sender<Vec<u8>>);

impl Log {
    fn new(file: File, writer_thread: bool) -> Log {
        if !writer_thread {
            return Log::Inline(file);
        }
        let (sender, writes) = std::sync::mpsc::channel::<Write>();
        std::thread::Builder::new()
            .name("floor-writer".into())
            .spawn(move || {
                for (page, offset, synced) in writes {
                    write_and_sync(&file, &page, offset);
                    let _ = synced.send(page);
                }
            })
            .expect("the writer thread starts");
        Log::Writer(sender)
    }

    /// Writes `page` at `offset` and syncs; gives the buffer back.
    async fn write_and_sync(&self, page: Vec<u8>, offset: u64) -> Vec<u8> {
        match self {
            Log::Inline(file) => {
                write_and_sync(file, &page, offset);
                page
            }
            Log::Writer(writes) => {
                let (synced, written) = oneshot::channel();
                writes
                    .send((page, offset, synced))
                    .expect("the writer thread is running");
                written.await.expect("the writer thread answers")
            }
        }
    }
}

fn write_and_sync(file: &File, page: &[u8], offset: u64) {
    file.write_all_at(page, offset).expect("log write");
    file.sync_data().expect("log sync");
}

/// Writes (at least `min_pages` pages) and syncs group after group,
/// answering each group after its sync. Inline, the write and the sync
/// block the thread: nothing else could use it meanwhile but reading
/// requests, which the kernel buffers.
async fn commit_forever(queue: Rc<Queue>, log: Log, min_pages: usize) {
    let mut offset = 0u64;
    let mut last_group = 1usize;
    let mut page = Vec::new();
    let mut stats = Stats::default();
    loop {
        let idle = Instant::now();
        let group = next_group(&queue, last_group).await;
        let gathered = Instant::now();
        last_group = group.len();
        page.clear();
        for waiting in &group {
            page.extend_from_slice(&waiting.body);
        }
        page.resize(page.len().div_ceil(PAGE).max(min_pages) * PAGE, 0);
        if offset + page.len() as u64 > LOG_BYTES {
            offset = 0;
        }
        let writing = Instant::now();
        page = log.write_and_sync(page, offset).await;
        let synced = Instant::now();
        offset += page.len() as u64;
        let appends = group.len();
        for waiting in group {
            let _ = waiting.done.send(());
        }
        stats.add(appends, gathered - idle, synced - writing);
    }
}

/// Waits for at least one request, then up to [`GATHER_WAIT`] for as many
/// as the last group held, and takes all of them.
async fn next_group(queue: &Queue, last_group: usize) -> Vec<Waiting> {
    while queue.waiting.borrow().is_empty() {
        queue.arrived.notified().await;
    }
    let deadline = Instant::now() + GATHER_WAIT;
    while queue.waiting.borrow().len() < last_group && Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    std::mem::take(&mut *queue.waiting.borrow_mut())
}

/// Reads requests from one keep-alive connection and answers each after
/// its group's sync (or `at_once`, storing nothing).
async fn serve_connection(
    mut stream: TcpStream,
    queue: Rc<Queue>,
    at_once: bool,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buffer = Vec::with_capacity(4096);
    while let Some(request) = read_request(&mut stream, &mut buffer).await? {
        if request.method_and_path().0 != "POST" {
            // Only publishes come here; anything else is not found.
            stream
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await?;
            continue;
        }
        if at_once {
            stream
                .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}")
                .await?;
            continue;
        }
        let (done, synced) = oneshot::channel();
        queue.waiting.borrow_mut().push(Waiting {
            body: request.body,
            done,
        });
        queue.arrived.notify_one();
        if synced.await.is_err() {
            return Ok(());
        }
        stream
            .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}")
            .await?;
    }
    Ok(())
}

/// Where the committer's time went since the last report, printed every
/// five seconds while requests come in.
struct Stats {
    since: Instant,
    groups: u64,
    appends: u64,
    waiting: Duration,
    syncing: Duration,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            since: Instant::now(),
            groups: 0,
            appends: 0,
            waiting: Duration::ZERO,
            syncing: Duration::ZERO,
        }
    }
}

impl Stats {
    fn add(&mut self, appends: usize, waiting: Duration, syncing: Duration) {
        self.groups += 1;
        self.appends += appends as u64;
        self.waiting += waiting;
        self.syncing += syncing;
        if self.since.elapsed() >= Duration::from_secs(5) {
            let groups = self.groups as f64;
            eprintln!(
                "groups={} appends_per_group={:.1} waiting_us={:.0} write_and_sync_us={:.0}",
                self.groups,
                self.appends as f64 / groups,
                self.waiting.as_secs_f64() * 1e6 / groups,
                self.syncing.as_secs_f64() * 1e6 / groups,
            );
            *self = Stats::default();
        }
    }
}
