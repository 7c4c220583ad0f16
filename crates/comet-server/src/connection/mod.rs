//! Accepting connections and running HTTP/1.1 on them.
//!
//! Each connection gets:
//! - a place under the connection cap, or a `503 too_many_connections`
//!   answer and a close (a bounded number of refusals at a time; beyond
//!   them a close without an answer), logged at most every 10 seconds;
//! - the direct path (`direct`): request heads read here, under the header
//!   timeout and size limit, so a slow, oversized or non-HTTP head gets a
//!   JSON error (408, 431, 400) instead of a silent close (`head`); the hot
//!   routes (publish, poll, streams) answered without hyper on a keep-alive
//!   loop, a waiting long poll parked with its socket so that the publisher
//!   writes its answer (`parked`);
//! - from the first request that needs anything else, hyper and the router
//!   for the rest of the connection; hyper then times later request heads
//!   and closes an idle connection after the same timeout;
//! - a write timeout: a client that accepts no bytes for that long while
//!   the server has bytes for it is disconnected (see `io`);
//! - an account of how it ended when no request was being answered (the
//!   client closed, it was idle, the socket failed, or a bug panicked its
//!   task, which is caught and logged): never an unexplained close.
//!
//! Before the server is ready (its store is still being reached), the
//! listener answers every request `503 store_unavailable` (`starting`).
//!
//! At shutdown the listener closes first, then the shared cancellation
//! token ends open streams and held polls, then connections get the grace
//! period to finish.

mod at_commit;
mod direct;
pub(crate) use direct::body_timeout;
pub use starting::unavailable_until;
mod head;
mod io;
mod parked;
mod request;
mod starting;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::config::refusals_in_flight;
use crate::error::ApiError;
use crate::metrics::{Closed, ConnectionRefusal};
use crate::throttle::Throttled;
use crate::transport::live::Framing;
use crate::transport::socket::{AnswerHead, stream_to};
use crate::transport::websocket;
use crate::{AppState, REFUSAL_WARNING_INTERVAL};
use futures::FutureExt;
use head::HeadError;
use tower::ServiceExt as _;

/// At each change of the authorization rules, hands every grouped stream
/// back to its task, which judges it again (`transport::grant`): an idle
/// stream would otherwise wait in its group until its next heartbeat.
async fn hand_back_at_rule_changes(state: AppState) {
    let mut changes = state.rules.changes();
    while changes.changed().await.is_ok() {
        state.hub.hand_back_grouped();
    }
}

pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let limit = state.config.max_connections;
    let places = Arc::new(Semaphore::new(limit));
    // Refusals hold a socket while they answer: bounded too.
    let refusing = Arc::new(Semaphore::new(refusals_in_flight(limit)));
    let refused_log = Throttled::new(REFUSAL_WARNING_INTERVAL);
    let accept_failed_log = Throttled::new(REFUSAL_WARNING_INTERVAL);
    let connections = TaskTracker::new();
    let _judging_streams =
        AbortOnDropHandle::new(tokio::spawn(hand_back_at_rule_changes(state.clone())));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok((stream, peer)) => (stream, PeerIp(peer.ip())),
            Err(error) => {
                // Out of file descriptors, or a connection reset before it
                // was accepted: wait a little instead of spinning.
                accept_failed_log.warn(|left_out| {
                    tracing::warn!(%error, failed_since_last_warning = left_out, "accept failed");
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(place) = places.clone().try_acquire_owned() else {
            state.metrics.refused(ConnectionRefusal::Limit);
            refused_log.warn(|left_out| {
                tracing::warn!(
                    limit,
                    refused_since_last_warning = left_out,
                    "refusing a connection: the limit of {limit} open connections is reached \
                     (--max-connections)"
                );
            });
            // Beyond the refusals already being answered, close at once.
            if let Ok(slot) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    let _slot = slot;
                    refuse(
                        stream,
                        ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "too_many_connections",
                            format!(
                                "the server's limit of {limit} open connections is reached; retry later"
                            ),
                        ),
                    )
                    .await;
                });
            }
            continue;
        };
        let router = router.clone();
        let state = state.clone();
        let tracker = connections.clone();
        let task = {
            let state = state.clone();
            async move {
                let counted = state.metrics.connection();
                let (stream, unanswered) = match direct::serve(stream, peer, &state).await {
                    direct::Outcome::Done => return,
                    direct::Outcome::Stream(stream, live, response_head) => {
                        // A task of its own, sized for writing a stream only:
                        // this one is sized for every kind of request and would
                        // stay allocated, at its largest, for the stream's life.
                        tracker.spawn(guarded(state.clone(), async move {
                            let _place = place;
                            let _counted = counted;
                            if live.framing() == Framing::WebSocket {
                                websocket::stream_to(stream, live, response_head, &state).await;
                            } else {
                                stream_to(stream, live, response_head, &state).await;
                            }
                        }));
                        return;
                    }
                    direct::Outcome::Refused(stream, error) => {
                        Box::pin(refuse(stream, error)).await;
                        return;
                    }
                    direct::Outcome::Router(stream, unanswered) => (stream, unanswered),
                };
                let _place = place;
                let _counted = counted;
                // Boxed: a connection on the path above never pays for the
                // size of hyper's connection state in its task.
                Box::pin(serve_http(
                    stream,
                    peer,
                    unanswered.freeze(),
                    router,
                    &state,
                ))
                .await;
            }
        };
        connections.spawn(guarded(state, task));
    }
    drop(listener);
    state.shutdown.cancel();
    connections.close();
    if tokio::time::timeout(state.config.shutdown_grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period");
    }
    Ok(())
}

/// Runs a connection's work; if it panics (a bug), the panic is logged and
/// counted (`comet_connections_closed_total{reason="server_error"}`), so a
/// connection never just disappears unexplained.
///
/// Built from combinators rather than as an `async fn`: an `async fn` would
/// hold `work` twice over (its argument and the future awaiting it), which
/// doubled the memory of every idle stream's task (measured: 2.6 KB ->
/// 4.6 KB per idle SSE connection).
fn guarded(
    state: AppState,
    work: impl Future<Output = ()> + Send,
) -> impl Future<Output = ()> + Send {
    std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .map(move |ended| {
            if let Err(panic) = ended {
                state.metrics.closed(Closed::ServerError);
                let what = panic
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("a panic");
                tracing::error!(
                    panic = what,
                    "a connection failed inside the server and was closed (a bug: please report it)"
                );
            }
        })
}

/// The address of a request's peer, as the router's handlers see it (an
/// extension of each request).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerIp(pub(crate) IpAddr);

/// Runs HTTP/1.1 through the router on a connection; `unanswered` was read
/// from it already and starts with a request head.
async fn serve_http(
    stream: TcpStream,
    peer: PeerIp,
    unanswered: Bytes,
    router: Router,
    state: &AppState,
) {
    let config = &state.config;
    let io = io::ConnectionIo::new(stream, unanswered, config.write_timeout, state.clone());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_head_bytes.max(8192))
        .keep_alive(true);
    let service = router.map_request(move |mut request: http::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(peer);
        request
    });
    let connection = http
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = state.shutdown.cancelled() => {
            // Finish the response in flight (streams end on the same
            // signal), then close instead of keeping alive.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%error, "connection ended with an error");
    }
}

impl HeadError {
    fn answer(&self, config: &crate::ServerConfig) -> (ConnectionRefusal, ApiError) {
        match self {
            HeadError::Timeout => (
                ConnectionRefusal::HeaderTimeout,
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "the request head did not arrive within {} ms",
                        config.header_read_timeout.as_millis()
                    ),
                ),
            ),
            HeadError::TooLarge => (
                ConnectionRefusal::HeadTooLarge,
                ApiError::new(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "headers_too_large",
                    format!(
                        "the request head exceeds the limit of {} bytes",
                        config.max_head_bytes
                    ),
                ),
            ),
            HeadError::Malformed(reason) => (
                ConnectionRefusal::Malformed,
                ApiError::bad_request(
                    "malformed_request",
                    format!("the request is not valid HTTP/1.x: {reason}"),
                ),
            ),
        }
    }
}

/// Answers `error` and closes, reading what the client already sent first
/// so that closing does not reset the connection under the answer.
async fn refuse(mut stream: TcpStream, error: ApiError) {
    let body = error.body();
    // Head and body in one write: a client that reads no further than the
    // first segment it gets (a WebSocket library refused its upgrade)
    // still has the error's body.
    let mut answer = AnswerHead {
        status: error.status,
        length: body.len(),
        cache_control: "",
        allow_origin: None,
        keep_alive: false,
        header: error.header,
    }
    .to_bytes();
    answer.extend_from_slice(&body);
    let mut discard = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut discard)).await;
    if stream.write_all(&answer).await.is_ok() {
        let _ = stream.shutdown().await;
        // Drain until the client closes (bounded), so the answer is not lost
        // to a reset.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while matches!(stream.read(&mut discard).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}
