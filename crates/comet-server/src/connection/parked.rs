//! Long polls on the direct path, parked on their socket.
//!
//! A long poll that finds nothing is parked with the hub
//! (`comet_hub::Subscription::park`) together with its connection: the
//! socket moves into a [`SocketCatch`] while the poll waits. When the next
//! message of its channels is stored, the publisher hands it over and the
//! answer is written there and then, without waiting for this poll's task
//! to be scheduled; with a thousand polls on a channel, all the answers go
//! out in one loop before any client's next request is read. The task,
//! woken after its answer is out, takes its socket back and carries on with
//! the connection (finishing the write if the socket could not take it all
//! at once). If the task is woken first (see `comet_hub`'s `park`), it
//! answers itself, as an ordinary poll; so it does after a change of the
//! authorization rules, which the publisher leaves to the task to judge
//! (`crate::transport::grant`). While parked, the task watches the
//! socket: a client that leaves frees its place and its subscription at
//! once, not when `wait` ends (a pipelined next request is left unread).
//!
//! Polls through the router wait the ordinary way (`transport::poll`).

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use comet_hub::Catch;
use comet_protocol::Message;
use http::{HeaderMap, StatusCode};

use crate::cors::AllowOrigin;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::AppState;
use crate::error::ApiError;
use crate::metrics::Transport;
use crate::transport::poll::{self, Poll};
use crate::transport::socket;

/// What became of a poll.
pub(super) enum Polled {
    /// The answer was written while parked, except these bytes (the socket
    /// could not take them at once).
    Sent { unsent: Bytes },
    /// The socket failed while the answer was written.
    Failed,
    /// The body to answer with (or the error).
    Answer(Result<Bytes, ApiError>),
}

/// The request, as the direct path read it.
pub(super) struct PollRequest<'a> {
    pub(super) target: &'a str,
    pub(super) query: Option<&'a str>,
    pub(super) headers: &'a HeaderMap,
    pub(super) allow_origin: Option<&'a AllowOrigin>,
    pub(super) keep_alive: bool,
}

/// Answers a poll on `stream`, parking it if it is a long poll with nothing
/// to deliver yet. The connection comes back with the outcome.
pub(super) async fn poll(
    state: &AppState,
    request: PollRequest<'_>,
    mut stream: TcpStream,
) -> (TcpStream, Polled) {
    let mut poll = match Poll::start(state, request.target, request.query, request.headers).await {
        Ok(poll) => poll,
        Err(error) => return (stream, Polled::Answer(Err(error))),
    };
    let wait = tokio::time::sleep(poll.request.wait);
    tokio::pin!(wait);
    loop {
        let items = match poll.ready().await {
            Ok(items) => items,
            Err(error) => return (stream, Polled::Answer(Err(error))),
        };
        if let Err(refusal) = poll.judged_again(state) {
            return (stream, Polled::Answer(Err(refusal)));
        }
        if !items.is_empty() || !poll.is_long() || wait.is_elapsed() {
            return (stream, Polled::Answer(Ok(poll.render(state, &items))));
        }
        let shared = Arc::new(stream);
        let catch = Arc::new(SocketCatch {
            socket: Mutex::new(Socket::Waiting(shared.clone())),
            woken: Notify::new(),
            allow_origin: request.allow_origin.cloned(),
            keep_alive: request.keep_alive,
            rule_changes: poll.rule_changes(),
        });
        let Some(parked) = poll.subscription.park(catch.clone()) else {
            // Something arrived meanwhile: look again. A refused park is
            // never handed a message, so the socket is untouched.
            drop(shared);
            let (taken, outcome) = catch.take_back();
            debug_assert!(matches!(outcome, Outcome::Untouched));
            stream = taken;
            continue;
        };
        let counted = state.metrics.parked_poll();
        let (left, woken) = tokio::select! {
            () = catch.woken.notified() => (false, true),
            () = &mut wait => (false, false),
            () = state.shutdown.cancelled() => (false, false),
            () = client_left(&shared) => (true, false),
        };
        drop((shared, counted));
        let (taken, socket) = catch.take_back();
        stream = taken;
        if left && matches!(socket, Outcome::Untouched) {
            // Nobody to answer: give its place up now, not when `wait` ends.
            return (stream, Polled::Failed);
        }
        return match socket {
            Outcome::Written(unsent) => {
                state.metrics.delivered(Transport::LongPoll, 1);
                (stream, Polled::Sent { unsent })
            }
            Outcome::Failed => (stream, Polled::Failed),
            Outcome::Untouched => {
                // Caught, but the publisher has not got to it yet: answer
                // here. Woken with nothing caught: the hub let the poll go
                // (its store skipped ahead, or the history changed); read
                // again. Otherwise the wait ended; answer with nothing.
                let caught = parked.caught();
                if caught.is_none() && woken {
                    drop(parked);
                    continue;
                }
                if let Err(refusal) = poll.judged_again(state) {
                    return (stream, Polled::Answer(Err(refusal)));
                }
                let answer = match caught {
                    Some(message) => {
                        state.metrics.delivered(Transport::LongPoll, 1);
                        poll::caught_answer(&message)
                    }
                    None => poll.render(state, &[]),
                };
                (stream, Polled::Answer(Ok(answer)))
            }
        };
    }
}

/// A parked poll's connection, answered by whoever gets to it first.
struct SocketCatch {
    socket: Mutex<Socket>,
    woken: Notify,
    allow_origin: Option<AllowOrigin>,
    keep_alive: bool,
    /// Changes of the rules: after one the poll's task, which judges it
    /// again, answers instead.
    rule_changes: tokio::sync::watch::Receiver<()>,
}

enum Socket {
    /// Not answered yet. The poll's task watches the same socket for its
    /// client leaving (a second reference, dropped before taking back).
    Waiting(Arc<TcpStream>),
    /// Answered by the publisher.
    Answered(Arc<TcpStream>, Outcome),
    /// Taken back by the poll's task.
    Gone,
}

/// What the publisher's write did.
enum Outcome {
    Untouched,
    Written(Bytes),
    Failed,
}

impl SocketCatch {
    fn socket(&self) -> MutexGuard<'_, Socket> {
        self.socket.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection, and what was written to it while parked. Nothing is
    /// written after this. The poll's task must have dropped its own
    /// reference to the socket first.
    fn take_back(&self) -> (TcpStream, Outcome) {
        let (stream, outcome) = match std::mem::replace(&mut *self.socket(), Socket::Gone) {
            Socket::Waiting(stream) => (stream, Outcome::Untouched),
            Socket::Answered(stream, outcome) => (stream, outcome),
            Socket::Gone => unreachable!("a parked poll's socket is taken back once"),
        };
        let stream = Arc::into_inner(stream)
            .expect("the poll's task dropped its reference before taking the socket back");
        (stream, outcome)
    }
}

impl Catch for SocketCatch {
    fn wake(&self) {
        self.woken.notify_one();
    }

    fn deliver(&self, message: &Arc<Message>) {
        if self.rule_changes.has_changed().unwrap_or(false) {
            // Left to the task (woken next), which judges the poll again.
            return;
        }
        let mut socket = self.socket();
        let stream = match std::mem::replace(&mut *socket, Socket::Gone) {
            Socket::Waiting(stream) => stream,
            // Taken back by the poll's task, which answered itself.
            other => {
                *socket = other;
                return;
            }
        };
        let body = poll::caught_answer(message);
        let head = socket::AnswerHead {
            status: StatusCode::OK,
            length: body.len(),
            cache_control: socket::NO_STORE,
            allow_origin: self.allow_origin.as_ref(),
            keep_alive: self.keep_alive,
            header: None,
        }
        .to_bytes();
        let segments = [&head[..], &body[..]];
        let outcome = match socket::write_from(&stream, segments.into_iter(), 0) {
            Ok(written) => Outcome::Written(unsent(&head, &body, written)),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                Outcome::Written(unsent(&head, &body, 0))
            }
            Err(_) => Outcome::Failed,
        };
        *socket = Socket::Answered(stream, outcome);
    }
}

/// What is left of `head` then `body` after the first `written` bytes.
fn unsent(head: &[u8], body: &Bytes, written: usize) -> Bytes {
    if written >= head.len() {
        return body.slice((written - head.len()).min(body.len())..);
    }
    let mut rest = BytesMut::with_capacity(head.len() - written + body.len());
    rest.extend_from_slice(&head[written..]);
    rest.extend_from_slice(body);
    rest.freeze()
}

/// Resolves when the client of a parked poll has closed its connection (or
/// the socket failed). Bytes waiting to be read are the client's next
/// request, pipelined: it is still there, and they are left for later.
async fn client_left(stream: &TcpStream) {
    let mut byte = [0u8; 1];
    if let Ok(1..) = stream.peek(&mut byte).await {
        std::future::pending::<()>().await;
    }
}
