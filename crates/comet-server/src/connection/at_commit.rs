//! Publish answers written by the store's writer, right after the commit.
//!
//! On the durable store a publish is answered after its sync, and the
//! writer syncs a group of publishes at a time. If each publisher's task
//! wrote its own answer, the group's answers would go out one task at a
//! time, interleaved with whatever else the runtime had to do (and with the
//! writer's own wake-ups), so a client holding many of them is woken once
//! per answer rather than once per group. Here the hub's
//! `publish_answering` hands the writer an answer that writes the whole
//! answer to the socket, without blocking, as soon as the commit is done:
//! the group's answers leave in one pass. What it wrote comes back to the
//! connection's task ([`Written`]), which, when it runs, writes whatever
//! the socket did not take and reads the next request.
//!
//! The writer writes to a duplicate of the connection's socket, made at
//! the connection's first such publish and kept for its life: one more
//! file per publishing connection, none for subscribers. The duplicates are
//! bounded (`config::answer_sockets`, whose files the connection caps set
//! aside); a connection that finds none left, or cannot duplicate its
//! socket, is answered by its task as before. Only keep-alive
//! publishes on a store that commits on a thread of its own are answered
//! this way (a repeat of an idempotency key too); the answer is exactly the
//! one the task would have written.

use std::net::TcpStream as StdTcpStream;
use std::os::fd::AsFd;
use std::sync::Arc;

use comet_hub::Published;
use comet_protocol::ChannelName;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::AppState;
use crate::cors::AllowOrigin;
use crate::publish;
use crate::transport::socket;

/// The connection's socket as the store's writer writes to it: duplicated
/// once, at the first answer it writes, under one of the server's places
/// for duplicates; and the buffer of the last answer, written into again.
#[derive(Default)]
pub(super) struct AnswerSocket {
    socket: Option<(Arc<StdTcpStream>, OwnedSemaphorePermit)>,
    spare: Vec<u8>,
}

/// What the writer wrote of an answer: the answer and how many of its
/// bytes the socket took.
pub(super) struct Written {
    answer: Vec<u8>,
    taken: usize,
}

impl AnswerSocket {
    /// An answer to a publish to `channel` for `publish_answering`, which
    /// returns what it wrote; `None` if no place for a duplicate is left or
    /// the socket cannot be duplicated, and the task answers as usual.
    pub(super) fn answer(
        &mut self,
        stream: &TcpStream,
        channel: ChannelName,
        allow_origin: Option<AllowOrigin>,
        state: &AppState,
    ) -> Option<impl FnOnce(&Published) -> Written + Send + 'static> {
        let socket = match &self.socket {
            Some((socket, _)) => socket.clone(),
            None => {
                let place = state.answer_sockets.clone().try_acquire_owned().ok()?;
                let duplicate = stream.as_fd().try_clone_to_owned().ok()?;
                let socket = Arc::new(StdTcpStream::from(duplicate));
                self.socket = Some((socket.clone(), place));
                socket
            }
        };
        let buffer = std::mem::take(&mut self.spare);
        Some(move |published: &Published| {
            let answer = publish::whole_answer(buffer, &channel, published, allow_origin.as_ref());
            // The socket is non-blocking: this takes what fits, or nothing.
            let taken = std::io::Write::write(&mut &*socket, &answer).unwrap_or(0);
            Written { answer, taken }
        })
    }
}

impl Written {
    /// Writes what the socket did not take of the answer, and gives its
    /// buffer back to `answer_socket`; false if the connection failed.
    pub(super) async fn finish(
        self,
        stream: &TcpStream,
        answer_socket: &mut AnswerSocket,
        state: &AppState,
    ) -> bool {
        let Written { answer, taken } = self;
        let finished = taken == answer.len() || {
            let timeout = state.config.write_timeout;
            socket::send(stream, &[&answer[taken..]], &[], b"", timeout, state)
                .await
                .is_ok()
        };
        answer_socket.spare = answer;
        finished
    }
}
