//! `GET /ws/{channels}`: the WebSocket transport, on the direct path.
//!
//! The handshake is judged first ([`accept`]: RFC 6455's checks, each
//! failure a JSON 400 naming what is wrong), then the subscription opens
//! as on every transport (its errors are the usual JSON answers, never a
//! `101`). After the `101`, the stream is the NDJSON stream's objects, each
//! in a text frame of its own: messages (their frames shared by every
//! subscriber, encoded once with the NDJSON line), gaps, and a heartbeat
//! object first and whenever the stream is idle, followed by a ping.
//!
//! The client's side is read as it comes, a control frame at a time
//! (`comet_protocol::ws::FrameReader`, allocated only once the client sends
//! something): each ping is answered with a pong, a close with a close, a data
//! frame with 1003, anything malformed with its close code. A ping of ours
//! that is still unanswered at the next idle heartbeat, a write timeout
//! after it was sent, disconnects the peer. The stream ends with 1001 at
//! shutdown, 4401 when the credential expires, 4403 when a reload revokes
//! its authorization (`super::grant`), 1011 when the store fails. After a
//! close frame the server ends its side and reads what the client still
//! sends until it closes too (at most a second), so the close frame is not
//! lost to a reset.
//!
//! Between batches a connection holds its subscription and its task's
//! state, no buffer, as SSE and NDJSON streams do (`super::socket`); once
//! caught up it joins its channel's group (`super::grouped`), which writes
//! its next frames until the client sends something or the stream is
//! handed back.

use std::io;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use bytes::Bytes;
use comet_protocol::ws::{self, ClientFrame, FrameReader, Violation};
use http::HeaderMap;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::AppState;
use crate::error::ApiError;
use crate::transport::grouped::{self, Left};
use crate::transport::live::Live;
use crate::transport::socket::send;
use crate::transport::{channel_list, open};

/// The error code of a malformed handshake.
const BAD_HANDSHAKE: &str = "bad_websocket_handshake";

/// The `Sec-WebSocket-Accept` for a valid handshake, or the answer to a
/// malformed one.
pub(crate) fn accept(headers: &HeaderMap) -> Result<String, ApiError> {
    let bad = |what: &str| {
        ApiError::bad_request(
            BAD_HANDSHAKE,
            format!(
                "GET /ws/… opens a WebSocket (RFC 6455): {what}. A handshake sends `Upgrade: \
                 websocket`, `Connection: Upgrade`, `Sec-WebSocket-Version: 13` and a \
                 `Sec-WebSocket-Key`; the other transports serve plain HTTP clients"
            ),
        )
    };
    if !lists(headers, "upgrade", "websocket") {
        return Err(bad("`Upgrade: websocket` is missing"));
    }
    if !lists(headers, "connection", "upgrade") {
        return Err(bad("`Connection` does not list `Upgrade`"));
    }
    let version = headers.get("sec-websocket-version");
    if version.is_none_or(|version| version.as_bytes() != b"13") {
        return Err(
            bad("only version 13 of the protocol is spoken (`Sec-WebSocket-Version: 13`)")
                .with_header("sec-websocket-version", "13"),
        );
    }
    let mut keys = headers.get_all("sec-websocket-key").iter();
    match (keys.next().map(|key| key.to_str()), keys.next()) {
        (Some(Ok(key)), None) if ws::is_valid_key(key) => Ok(ws::accept_key(key)),
        _ => Err(bad(
            "`Sec-WebSocket-Key` must be one base64 encoding of 16 bytes",
        )),
    }
}

/// Whether a header field `name` lists `token` (comma-separated, any case).
fn lists(headers: &HeaderMap, name: &str, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|item| item.trim().eq_ignore_ascii_case(token))
        })
    })
}

/// The `101` answer. A client that offered the `comet` subprotocol gets it
/// (a browser that offered one fails the connection without it).
pub(crate) fn response_head(accept: &str, headers: &HeaderMap) -> Vec<u8> {
    let mut head = Vec::with_capacity(160);
    head.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ",
    );
    head.extend_from_slice(accept.as_bytes());
    head.extend_from_slice(b"\r\n");
    if lists(headers, "sec-websocket-protocol", "comet") {
        head.extend_from_slice(b"sec-websocket-protocol: comet\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// What the client did, read from its side of the connection.
#[derive(Default)]
struct Heard {
    /// Pongs answering the pings read (at most one read's worth: they are
    /// written before anything more is read).
    pongs: Vec<Bytes>,
    pong: bool,
    /// The connection ends: with this close frame to send first, if any.
    end: Option<Option<Bytes>>,
}

/// Writes the stream until it ends, the client closes or breaks the
/// protocol, or the client accepts nothing (or answers no ping) for the
/// write timeout.
pub(crate) async fn stream_to(
    stream: TcpStream,
    mut live: Live,
    response_head: Vec<u8>,
    state: &AppState,
) {
    let timeout = state.config.write_timeout;
    let stream = Arc::new(stream);
    let mut unsent_head = response_head;
    let mut reader: Option<Box<FrameReader>> = None;
    let mut ping_unanswered_since: Option<Instant> = None;
    loop {
        if unsent_head.is_empty() {
            // Caught up: the channel's group writes the stream meanwhile.
            match grouped::stay(&stream, &mut live, state).await {
                None | Some(Left::Resume) => {}
                Some(Left::Send(heartbeat)) => {
                    if !ping_answered_in_time(&mut ping_unanswered_since, state)
                        || send(&stream, &[], &heartbeat, b"", timeout, state)
                            .await
                            .is_err()
                    {
                        return;
                    }
                    continue;
                }
                Some(Left::End) => return,
            }
        }
        let mut out: Vec<Bytes> = Vec::new();
        let mut last = false;
        tokio::select! {
            biased;
            heard = hear(&stream, &mut reader) => {
                if heard.pong {
                    ping_unanswered_since = None;
                }
                out = heard.pongs;
                if let Some(close) = heard.end {
                    out.extend(close);
                    last = true;
                }
            }
            frames = live.next_frames() => match frames {
                Some(frames) => {
                    if live.sent_heartbeat()
                        && !ping_answered_in_time(&mut ping_unanswered_since, state)
                    {
                        return;
                    }
                    out = frames;
                    // The credential expired or was revoked: these frames
                    // end with our close frame, and nothing follows it
                    // (not even an answer to the client's close).
                    last = live.has_ended();
                }
                None => {
                    last = true;
                    if !live.has_ended() {
                        let close = if state.shutdown.is_cancelled() {
                            ws::GOING_AWAY_FRAME
                        } else {
                            ws::INTERNAL_ERROR_FRAME
                        };
                        out.push(Bytes::from_static(close));
                    }
                }
            },
        }
        if (!out.is_empty() || !unsent_head.is_empty())
            && send(&stream, &[&unsent_head], &out, b"", timeout, state)
                .await
                .is_err()
        {
            return;
        }
        unsent_head = Vec::new();
        if last {
            linger(&stream).await;
            return;
        }
    }
}

/// The longest a connection whose close frame went out waits for its
/// client to close too.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Ends a connection whose close frame went out: our side's FIN first,
/// then whatever the client still sends (its own close frame, a late
/// pong) read and dropped until it closes its side, for at most
/// [`LINGER`]. Dropping a socket with unread bytes would reset the
/// connection instead, and a reset can make the client lose our close
/// frame (a browser then reports 1006, not our code).
async fn linger(stream: &TcpStream) {
    if socket2::SockRef::from(stream)
        .shutdown(std::net::Shutdown::Write)
        .is_err()
    {
        return;
    }
    let mut scratch = [0u8; 512];
    let drain = async {
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut scratch) {
                Ok(0) => return,
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Before a heartbeat (which carries a ping): false if the last ping is
/// unanswered for the write timeout (the connection is given up);
/// otherwise notes when this one went out, unless one is still waiting.
fn ping_answered_in_time(unanswered_since: &mut Option<Instant>, state: &AppState) -> bool {
    match unanswered_since {
        Some(since) if since.elapsed() >= state.config.write_timeout => {
            state.metrics.stalled_disconnect();
            tracing::debug!("closing a WebSocket whose peer answered no ping");
            false
        }
        Some(_) => true,
        None => {
            *unanswered_since = Some(Instant::now());
            true
        }
    }
}

/// Waits for the client to send something and reads it: what to answer,
/// and whether the connection ends. Cancel-safe: a partial frame stays in
/// `reader`.
async fn hear(stream: &TcpStream, reader: &mut Option<Box<FrameReader>>) -> Heard {
    let mut heard = Heard::default();
    loop {
        if stream.readable().await.is_err() {
            heard.end = Some(None);
            return heard;
        }
        let mut input = [0u8; 512];
        let read = match stream.try_read(&mut input) {
            Ok(0) => {
                heard.end = Some(None);
                return heard;
            }
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => {
                heard.end = Some(None);
                return heard;
            }
        };
        let reader = reader.get_or_insert_with(Box::default);
        let result = reader.read(&input[..read], |frame| match frame {
            ClientFrame::Ping(payload) => heard.pongs.push(ws::pong_frame(payload)),
            ClientFrame::Pong => heard.pong = true,
            ClientFrame::Close(code) => {
                // The close handshake: the client's code back (or a normal
                // close for a close without one).
                let code = code.unwrap_or(ws::close::NORMAL);
                heard.end = Some(Some(ws::close_frame(code)));
            }
        });
        if let Err(Violation { code, reason }) = result {
            tracing::debug!(
                code,
                reason,
                "closing a WebSocket whose client broke the protocol"
            );
            heard.end = Some(Some(ws::close_frame(code)));
        }
        return heard;
    }
}

/// `GET /ws/{channels}` through the router, which serves no WebSocket: a
/// handshake the direct path left to it (HTTP/1.0, a percent-encoded or
/// nested path, …) is answered with what is wrong with it, as any
/// transport would answer, or else a 400 saying how to ask.
pub(crate) async fn through_router(
    State(state): State<AppState>,
    channels: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiError {
    if let Err(error) = accept(&headers) {
        return error;
    }
    let channels = match channel_list(channels) {
        Ok(channels) => channels,
        Err(error) => return error,
    };
    if let Err(error) = open(&state, &channels, query.as_deref(), &headers).await {
        return error;
    }
    ApiError::bad_request(
        BAD_HANDSHAKE,
        "a WebSocket opens with a plain HTTP/1.1 `GET /ws/{channels}`: channel names as they are, \
         not percent-encoded",
    )
}
