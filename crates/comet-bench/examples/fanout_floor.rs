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
//! ```text
//! ulimit -n 20000
//! cargo run --release -p comet-bench --example fanout_floor -- 127.0.0.1:18842
//! comet bench fanout --server http://127.0.0.1:18842 --subscribers 10000 --messages 60 --rate 4
//! ```

use std::cell::RefCell;
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
}

/// Open streams by the channel of their path.
type Streams = Rc<RefCell<HashMap<String, Vec<Rc<Stream>>>>>;

fn main() -> std::io::Result<()> {
    let Some(listen) = std::env::args().nth(1) else {
        eprintln!("usage: fanout_floor LISTEN_ADDRESS");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let streams = Streams::default();
        let listener = TcpListener::bind(&listen).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (socket, _) = listener.accept().await?;
            // A client that goes away ends its connection; nothing else to do.
            tokio::task::spawn_local(serve_connection(socket, Rc::clone(&streams)));
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
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n")
                .await?;
            let stream = Rc::new(Stream {
                socket,
                unsent: RefCell::new(Vec::new()),
                left_some: Notify::new(),
            });
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
        socket
            .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}")
            .await?;
    }
    Ok(())
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
