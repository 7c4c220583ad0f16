//! SSE and NDJSON streams written straight to the connection.
//!
//! A stream is the one response its connection will ever carry, and it may
//! stay open for days. Served through hyper, each one keeps hyper's read and
//! write buffers and the router's request machinery for its whole life
//! (about 18 KB per idle subscriber). So when a connection's first request
//! is a plain `GET /sse/…` or `GET /stream/…`, it is taken here instead: the
//! subscription opens, the response head is written by hand, and the loop
//! writes each batch as one chunk with a single vectored write of the shared
//! frames. Between batches a connection holds its subscription and a few
//! hundred bytes of task state, no buffer.
//!
//! Everything unusual is left to the router, which answers it exactly as
//! before (the head is handed back unread): other methods and routes,
//! HTTP/1.0, a body, percent-encoded channel lists, a foreign origin the
//! policy refuses, and any request the subscription refuses (the router
//! then answers the same error).
//!
//! The response is chunked HTTP/1.1, like the router's, and ends with the
//! last chunk at shutdown. The write timeout applies as everywhere: a
//! client that accepts no bytes for that long is disconnected. A client
//! that closes is noticed at once (the socket is watched for reading).

use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use tokio::net::TcpStream;

use crate::AppState;
use crate::connection::MAX_HEADERS;
use crate::cors::{self, Verdict};
use crate::transport::live::{Framing, Live};

/// What became of a connection offered to [`serve`].
pub(crate) enum Outcome {
    /// The stream was served to its end; the connection is closed.
    Served,
    /// Not a request for this path: the connection and its unread head,
    /// for the router.
    Declined(TcpStream, Bytes),
}

/// Serves the connection's first request, with head `head`, if it opens
/// a stream.
pub(crate) async fn serve(stream: TcpStream, head: Bytes, state: &AppState) -> Outcome {
    let Some(request) = StreamRequest::parse(&head, state) else {
        return Outcome::Declined(stream, head);
    };
    let opened = Box::pin(Live::open(
        state.clone(),
        &request.channels,
        request.query.as_deref(),
        &request.headers,
        request.framing,
    ))
    .await;
    let Ok(live) = opened else {
        return Outcome::Declined(stream, head);
    };
    let response_head = response_head(request.framing, request.allow_origin.as_ref());
    drop(request);
    drop(head);
    stream_to(stream, live, response_head, state).await;
    Outcome::Served
}

/// A first request this path takes.
struct StreamRequest {
    framing: Framing,
    channels: String,
    query: Option<String>,
    headers: HeaderMap,
    allow_origin: Option<HeaderValue>,
}

impl StreamRequest {
    fn parse(head: &[u8], state: &AppState) -> Option<Self> {
        let mut parsed_headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut parsed_headers);
        let httparse::Status::Complete(_) = request.parse(head).ok()? else {
            return None;
        };
        if request.method != Some("GET") || request.version != Some(1) {
            return None;
        }
        let target = request.path?;
        let (framing, rest) = if let Some(rest) = target.strip_prefix("/sse/") {
            (Framing::Sse, rest)
        } else if let Some(rest) = target.strip_prefix("/stream/") {
            (Framing::Ndjson, rest)
        } else {
            return None;
        };
        let (channels, query) = match rest.split_once('?') {
            Some((channels, query)) => (channels, Some(query.to_string())),
            None => (rest, None),
        };
        if channels.is_empty() || channels.contains(['/', '%', '#']) {
            return None;
        }
        let mut headers = HeaderMap::with_capacity(request.headers.len());
        for parsed in request.headers.iter() {
            let name = HeaderName::from_bytes(parsed.name.as_bytes()).ok()?;
            let value = HeaderValue::from_bytes(parsed.value).ok()?;
            let carries_body = (name == header::CONTENT_LENGTH && value != "0")
                || name == header::TRANSFER_ENCODING;
            if carries_body || name == header::UPGRADE || name == header::EXPECT {
                return None;
            }
            headers.append(name, value);
        }
        let allow_origin = match cors::judge(&state.config.cors, &headers) {
            Verdict::Plain => None,
            Verdict::Allowed(origin) => Some(origin),
            Verdict::Refused(_) => return None,
        };
        Some(Self {
            framing,
            channels: channels.to_string(),
            query,
            headers,
            allow_origin,
        })
    }
}

/// The response head: the router's headers for a stream, chunked.
fn response_head(framing: Framing, allow_origin: Option<&HeaderValue>) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: ");
    head.extend_from_slice(framing.content_type().as_bytes());
    head.extend_from_slice(b"\r\ncache-control: no-cache\r\nx-accel-buffering: no\r\n");
    if let Some(origin) = allow_origin {
        head.extend_from_slice(b"access-control-allow-origin: ");
        head.extend_from_slice(origin.as_bytes());
        head.extend_from_slice(b"\r\nvary: origin\r\n");
    }
    head.extend_from_slice(b"transfer-encoding: chunked\r\ndate: ");
    head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// Writes the stream until it ends, the client leaves, or the client
/// accepts nothing for the write timeout.
async fn stream_to(stream: TcpStream, mut live: Live, response_head: Vec<u8>, state: &AppState) {
    let timeout = state.config.write_timeout;
    let mut unsent_head = response_head;
    loop {
        let frames = tokio::select! {
            biased;
            frames = live.next_frames() => frames,
            () = client_gone(&stream) => return,
        };
        let Some(frames) = frames else {
            // The stream ended: the last chunk, so clients see a complete
            // response rather than a cut one.
            let _ = send(&stream, &[&unsent_head, b"0\r\n\r\n"], &[], timeout, state).await;
            return;
        };
        let size: usize = frames.iter().map(Bytes::len).sum();
        let size_line = format!("{size:x}\r\n");
        let lead: [&[u8]; 2] = [&unsent_head, size_line.as_bytes()];
        if send(&stream, &lead, &frames, timeout, state).await.is_err() {
            return;
        }
        unsent_head = Vec::new();
    }
}

/// Resolves when the client has closed its side (or the socket failed).
/// Anything it sends meanwhile is read and ignored: the stream is the last
/// answer this connection gives.
async fn client_gone(stream: &TcpStream) {
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        let mut discard = [0u8; 256];
        match stream.try_read(&mut discard) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Writes `lead`, then `frames` as the body of one chunk (its size line is
/// the last of `lead`, its closing CRLF is added here), as few vectored
/// writes as the socket allows.
async fn send(
    stream: &TcpStream,
    lead: &[&[u8]],
    frames: &[Bytes],
    timeout: Duration,
    state: &AppState,
) -> io::Result<()> {
    let tail: &[u8] = if frames.is_empty() { b"" } else { b"\r\n" };
    let segments = || {
        lead.iter()
            .copied()
            .chain(frames.iter().map(|frame| &frame[..]))
            .chain(std::iter::once(tail))
    };
    let total: usize = segments().map(<[u8]>::len).sum();
    let mut written = 0;
    while written < total {
        match write_from(stream, segments(), written) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(count) => written += count,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                let ready = tokio::time::timeout(timeout, stream.writable()).await;
                match ready {
                    Ok(ready) => ready?,
                    Err(_) => {
                        state.metrics.stalled_disconnect();
                        tracing::debug!(
                            "closing a stream whose client accepted no bytes for the write timeout"
                        );
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// One non-blocking vectored write of `segments`, skipping the first
/// `skip` bytes (already written).
fn write_from<'a>(
    stream: &TcpStream,
    segments: impl Iterator<Item = &'a [u8]>,
    mut skip: usize,
) -> io::Result<usize> {
    const MOST_SLICES: usize = 64;
    let mut slices = [IoSlice::new(&[]); MOST_SLICES];
    let mut count = 0;
    for segment in segments {
        if skip >= segment.len() {
            skip -= segment.len();
            continue;
        }
        slices[count] = IoSlice::new(&segment[skip..]);
        skip = 0;
        count += 1;
        if count == MOST_SLICES {
            break;
        }
    }
    stream.try_write_vectored(&slices[..count])
}
