//! A direct-path stream while its channel's group writes it (see
//! `comet_hub`'s group): the socket's side of the group, and what the
//! stream's task does meanwhile.
//!
//! A caught-up stream hands the hub a [`SocketWriter`]: the group's task
//! writes each batch to the socket (SSE and NDJSON as one chunk,
//! WebSocket as its text frames), the same bytes the stream's own loop
//! would write, without waiting. The stream's task sleeps until it is
//! handed back (the socket did not take a whole write, the stream fell
//! behind, the history changed, the authorization rules changed:
//! `super::grant`), a heartbeat is due (none is while the group writes),
//! its credential expires, the server shuts down, or its
//! client leaves (SSE, NDJSON) or sends something (WebSocket: a ping to
//! answer, a close). Then it takes the stream out of the group, finishes
//! what the socket did not take, and carries on the usual way.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use comet_hub::{Encoded, GroupWriter, Written};
use comet_protocol::Message;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::AppState;
use crate::transport::live::{Framing, Live, until};
use crate::transport::socket::{client_gone, send};

/// How a stay in the group ended.
pub(crate) enum Left {
    /// Carry on the usual way.
    Resume,
    /// Carry on with these frames (a heartbeat).
    Send(Vec<Bytes>),
    /// The connection is over.
    End,
}

/// Joins the group of `live`'s channel if the stream has nothing to send,
/// and waits until it leaves. `None`: not joined (read the usual way).
pub(crate) async fn stay(
    stream: &Arc<TcpStream>,
    live: &mut Live,
    state: &AppState,
) -> Option<Left> {
    // Most calls of a busy stream find it behind: no writer for those. A
    // stream the rules changed for is judged first, by its own loop (a
    // change hands every member back: `connection`).
    if !live.may_join_group() || live.rules_changed() {
        return None;
    }
    let writer = Arc::new(SocketWriter {
        framing: live.framing(),
        state: state.clone(),
        side: Mutex::new(Side {
            stream: Some(stream.clone()),
            unsent: Vec::new(),
            failed: false,
            last_write: Instant::now(),
        }),
        handed_back: Notify::new(),
    });
    let grouped = live.join_group(writer.clone())?;
    // The group may hold the writer a while after the stream left (until
    // its list is pruned): it must not hold the socket, even if this
    // future is dropped before it ends.
    let _release = Release(&writer);
    let heartbeat = state.config.heartbeat;
    let deadline = live.deadline();
    let why = loop {
        // Rules that changed as it joined: the hand-back may have passed
        // it by.
        if live.rules_changed() {
            break Why::Other;
        }
        let idle_since = writer.side().last_write;
        tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => break Why::Other,
            () = until(deadline) => break Why::Other,
            () = writer.handed_back.notified() => break Why::Other,
            why = client_side(stream, live.framing()) => break why,
            () = tokio::time::sleep_until(idle_since + heartbeat) => {
                if writer.side().last_write == idle_since {
                    break Why::Heartbeat;
                }
            }
        }
    };
    live.leave_group(grouped);
    let (unsent, failed) = writer.taken();
    if failed || matches!(why, Why::ClientGone) {
        return Some(Left::End);
    }
    if !unsent.is_empty() {
        let timeout = state.config.write_timeout;
        if send(stream, &[], &unsent, b"", timeout, state)
            .await
            .is_err()
        {
            return Some(Left::End);
        }
    }
    Some(match why {
        Why::Heartbeat => Left::Send(live.heartbeat_now()),
        _ => Left::Resume,
    })
}

/// Takes the socket from the writer when dropped.
struct Release<'a>(&'a SocketWriter);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.side().stream = None;
    }
}

enum Why {
    Heartbeat,
    ClientGone,
    Other,
}

/// Resolves when the client's side needs the stream's task: it closed
/// (SSE and NDJSON read nothing else), or, on a WebSocket, it sent
/// something (a ping to answer, a close, …).
async fn client_side(stream: &TcpStream, framing: Framing) -> Why {
    if framing == Framing::WebSocket {
        let _ = stream.readable().await;
        return Why::Other;
    }
    client_gone(stream).await;
    Why::ClientGone
}

/// The socket, as the group writes it.
struct SocketWriter {
    framing: Framing,
    state: AppState,
    side: Mutex<Side>,
    handed_back: Notify,
}

struct Side {
    /// Taken when the stream leaves the group.
    stream: Option<Arc<TcpStream>>,
    /// The part of a chunk the socket did not take.
    unsent: Vec<Bytes>,
    failed: bool,
    last_write: Instant,
}

impl SocketWriter {
    fn side(&self) -> MutexGuard<'_, Side> {
        self.side.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the group left to the task; the group holds the socket no
    /// longer.
    fn taken(&self) -> (Vec<Bytes>, bool) {
        let mut side = self.side();
        side.stream = None;
        (std::mem::take(&mut side.unsent), side.failed)
    }
}

impl GroupWriter for SocketWriter {
    fn write(&self, messages: &[Arc<Message>], encoded: &mut Encoded) -> Written {
        let mut side = self.side();
        let Some(stream) = side.stream.clone() else {
            return Written::Stopped;
        };
        let bytes =
            encoded.get_or_insert_with(self.framing as u8, || self.framing.messages(messages));
        let mut written = 0;
        while written < bytes.len() {
            match stream.try_write(&bytes[written..]) {
                Ok(0) => {
                    side.failed = true;
                    break;
                }
                Ok(count) => written += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    side.failed = true;
                    break;
                }
            }
        }
        self.state
            .metrics
            .delivered(self.framing.transport(), messages.len());
        if written == bytes.len() {
            side.last_write = Instant::now();
            return Written::All;
        }
        if !side.failed {
            // The rest, as a slice of the shared bytes: no copy.
            side.unsent.push(bytes.slice(written..));
        }
        Written::Stopped
    }

    fn handed_back(&self) {
        self.handed_back.notify_one();
    }
}
