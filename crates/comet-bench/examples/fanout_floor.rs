//! The floor under fan-out on this machine: a server that does only what
//! any push server must do to deliver a message to N subscribers, one
//! `write` per subscriber's socket, in the same pass that reads the
//! publish (as Nchan's worker does), from one thread with no task to wake
//! per subscriber. `GET` anything opens an SSE stream on that path (the
//! answer's head, then events); `POST /pub/{channel}` delivers the body as
//! one event to every stream on `/sse/{channel}` and then answers `201`. A
//! socket that cannot take a whole event keeps the rest in a buffer of its
//! own, flushed when it becomes writable, so every event still arrives
//! whole and in order. No store, no resume, no heartbeats: `comet bench
//! fanout` against it measures the shortest fan-out round the kernel and
//! the loopback network allow, the bound Comet's delivery path is compared
//! with in `bench/README.md`.
//!
//! With `--rounds` it batches instead, as Comet's channel groups do: a
//! publish is appended to the channel's log and answered at once unless
//! the slowest stream would be more than 16 events behind it (then after
//! the round that brings it within), and one task per channel passes over
//! the channel's sockets round after round, writing each everything
//! published since its last write. That is the least a server must do to
//! deliver several times Nchan's messages to one channel: what bounds
//! latency at such rates on this machine. `--rounds --gather`: a round
//! that was outrun first waits up to 1 ms for 8 more publishes, as a
//! Comet group's pass does, so that each write carries more.
//!
//! ```text
//! ulimit -n 20000
//! cargo run --release -p comet-bench --example fanout_floor -- 127.0.0.1:18842 [--rounds [--gather]]
//! comet bench fanout --server http://127.0.0.1:18842 --subscribers 10000 --messages 60 --rate 4
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::rc::Rc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

#[path = "floors/request.rs"]
mod request;
use request::read_request;

/// One open stream: its socket, and what it could not take yet.
struct Stream {
    socket: TcpStream,
    /// Bytes waiting for the socket to become writable, in order; new
    /// events queue behind them.
    unsent: RefCell<Vec<u8>>,
    /// Told when a fan-out leaves bytes in `unsent`.
    left_some: Notify,
    /// `--rounds`: how much of its channel's log it was given.
    given: Cell<usize>,
}

/// How far a publish may run ahead of the slowest stream in `--rounds`.
const MAX_LAG: u64 = 16;

/// `--gather`: how long an outrun round waits, at most, for
/// [`GATHER_MOST`] more publishes before the next.
const GATHER: std::time::Duration = std::time::Duration::from_millis(1);
const GATHER_MOST: u64 = 8;

/// Streams in a pass between chances for the publisher to be read.
const YIELD_EVERY: usize = 64;

/// A channel in `--rounds` mode.
#[derive(Default)]
struct Channel {
    /// Every event published, framed (a run's worth: never trimmed).
    log: RefCell<Vec<u8>>,
    /// Events published.
    published: Cell<u64>,
    /// Every stream has been given at least this many events.
    settled: Cell<u64>,
    streams: RefCell<Vec<Rc<Stream>>>,
    /// Told at each publish: wakes the round task.
    appended: Notify,
    /// Told at each round's end: wakes publishes held back.
    round_done: Notify,
    running: Cell<bool>,
}

type Channels = Rc<RefCell<HashMap<String, Rc<Channel>>>>;

/// Open streams by the channel of their path.
type Streams = Rc<RefCell<HashMap<String, Vec<Rc<Stream>>>>>;

fn main() -> std::io::Result<()> {
    let Some(listen) = std::env::args().nth(1) else {
        eprintln!("usage: fanout_floor LISTEN_ADDRESS");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let rounds = std::env::args().nth(2).as_deref() == Some("--rounds");
    let gather = std::env::args().nth(3).as_deref() == Some("--gather");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let streams = Streams::default();
        let channels = Channels::default();
        let listener = TcpListener::bind(&listen).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (socket, _) = listener.accept().await?;
            // A client that goes away ends its connection; nothing else to do.
            if rounds {
                tokio::task::spawn_local(serve_in_rounds(socket, Rc::clone(&channels), gather));
            } else {
                tokio::task::spawn_local(serve_connection(socket, Rc::clone(&streams)));
            }
        }
    })
}

/// Reads one request: a `GET` becomes a stream, a `POST` is a publish (and
/// the connection is kept for the next one).
async fn serve_connection(mut socket: TcpStream, streams: Streams) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut buffer = Vec::with_capacity(4096);
    while let Some(request) = read_request(&mut socket, &mut buffer).await? {
        let (method, path) = request.method_and_path();
        if method == "GET" {
            let channel = path.trim_start_matches("/sse/").to_string();
            let stream = open_stream(socket, 0).await?;
            streams
                .borrow_mut()
                .entry(channel.clone())
                .or_default()
                .push(Rc::clone(&stream));
            // The stream's own task only flushes what the fan-out left.
            let ended = flush_forever(&stream).await;
            if let Some(members) = streams.borrow_mut().get_mut(&channel) {
                members.retain(|member| !Rc::ptr_eq(member, &stream));
            }
            return ended;
        }
        let mut event = Vec::with_capacity(request.body.len() + 8);
        event.extend_from_slice(b"data: ");
        event.extend_from_slice(&request.body);
        event.extend_from_slice(b"\n\n");
        let channel = path.trim_start_matches("/pub/");
        let members = streams.borrow().get(channel).cloned().unwrap_or_default();
        for stream in &members {
            deliver(stream, &event);
        }
        socket.write_all(CREATED).await?;
    }
    Ok(())
}

/// Answers a `GET` with an SSE stream's head; the stream, given `given`
/// bytes of its channel's log already (`--rounds`).
async fn open_stream(mut socket: TcpStream, given: usize) -> std::io::Result<Rc<Stream>> {
    socket
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n")
        .await?;
    Ok(Rc::new(Stream {
        socket,
        unsent: RefCell::new(Vec::new()),
        left_some: Notify::new(),
        given: Cell::new(given),
    }))
}

/// The answer to a publish.
const CREATED: &[u8] = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}";

/// `--rounds`: a `GET` joins the channel's rounds, a `POST` appends to its
/// log and is answered once the slowest stream is within [`MAX_LAG`].
async fn serve_in_rounds(
    mut socket: TcpStream,
    channels: Channels,
    gather: bool,
) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut buffer = Vec::with_capacity(4096);
    while let Some(request) = read_request(&mut socket, &mut buffer).await? {
        let (method, path) = request.method_and_path();
        let name = path.trim_start_matches("/sse/").trim_start_matches("/pub/");
        let channel = Rc::clone(channels.borrow_mut().entry(name.to_string()).or_default());
        if !channel.running.replace(true) {
            tokio::task::spawn_local(run_rounds(Rc::clone(&channel), gather));
        }
        if method == "GET" {
            let given = channel.log.borrow().len();
            let stream = open_stream(socket, given).await?;
            channel.streams.borrow_mut().push(Rc::clone(&stream));
            let ended = flush_forever(&stream).await;
            channel
                .streams
                .borrow_mut()
                .retain(|member| !Rc::ptr_eq(member, &stream));
            return ended;
        }
        {
            let mut log = channel.log.borrow_mut();
            log.extend_from_slice(b"data: ");
            log.extend_from_slice(&request.body);
            log.extend_from_slice(b"\n\n");
        }
        channel.published.set(channel.published.get() + 1);
        channel.appended.notify_one();
        while channel.published.get() - channel.settled.get() > MAX_LAG {
            channel.round_done.notified().await;
        }
        socket.write_all(CREATED).await?;
    }
    Ok(())
}

/// `--rounds`: passes over the channel's streams whenever something was
/// published, each given everything published since its last turn.
async fn run_rounds(channel: Rc<Channel>, gather: bool) {
    loop {
        if channel.published.get() == channel.settled.get() {
            channel.appended.notified().await;
            continue;
        }
        let start = channel.published.get();
        let streams = channel.streams.borrow().clone();
        for (index, stream) in streams.iter().enumerate() {
            {
                let log = channel.log.borrow();
                let from = stream.given.replace(log.len());
                if from < log.len() {
                    deliver(stream, &log[from..]);
                }
            }
            if index % YIELD_EVERY == YIELD_EVERY - 1 {
                tokio::task::yield_now().await;
            }
        }
        channel.settled.set(start);
        channel.round_done.notify_waiters();
        if gather && channel.published.get() > start {
            let deadline = tokio::time::Instant::now() + GATHER;
            while channel.published.get() - start < GATHER_MOST {
                let appended = channel.appended.notified();
                if tokio::time::timeout_at(deadline, appended).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Writes `event` to the stream now, as far as its socket takes it; what
/// it does not take waits for the stream's own task.
fn deliver(stream: &Stream, event: &[u8]) {
    let mut unsent = stream.unsent.borrow_mut();
    if !unsent.is_empty() {
        unsent.extend_from_slice(event);
        return;
    }
    let written = match stream.socket.try_write(event) {
        Ok(written) => written,
        Err(error) if error.kind() == ErrorKind::WouldBlock => 0,
        // A closed stream: its own task sees the error and ends.
        Err(_) => event.len(),
    };
    if written < event.len() {
        unsent.extend_from_slice(&event[written..]);
        stream.left_some.notify_one();
    }
}

/// Flushes what the fan-out left for this stream whenever the socket can
/// take more; ends when the client goes away.
async fn flush_forever(stream: &Stream) -> std::io::Result<()> {
    loop {
        if stream.unsent.borrow().is_empty() {
            tokio::select! {
                () = stream.left_some.notified() => {}
                readable = stream.socket.readable() => {
                    readable?;
                    // A client sends nothing on a stream: readable means
                    // it closed (or misbehaves; a byte is dropped).
                    let mut probe = [0u8; 1];
                    match stream.socket.try_read(&mut probe) {
                        Ok(0) => return Ok(()),
                        Err(error) if error.kind() != ErrorKind::WouldBlock => return Err(error),
                        _ => {}
                    }
                }
            }
            continue;
        }
        stream.socket.writable().await?;
        let mut unsent = stream.unsent.borrow_mut();
        match stream.socket.try_write(&unsent) {
            Ok(written) => {
                unsent.drain(..written);
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
}
