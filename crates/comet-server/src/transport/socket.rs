//! SSE and NDJSON streams written straight to the connection, and the
//! writing both direct paths share.
//!
//! A stream is the one response its connection will ever carry, and it may
//! stay open for days. Served through hyper, each one keeps hyper's read and
//! write buffers and the router's request machinery for its whole life
//! (about 18 KB per idle subscriber). So a plain `GET /sse/…` or
//! `GET /stream/…` is served here instead: the response head is written by
//! hand, and the loop writes each batch as one chunk with a single vectored
//! write of the shared frames. Between batches a connection holds its subscription and a few
//! hundred bytes of task state, no buffer. Once it has sent everything, the
//! stream joins its channel's group (`transport::grouped`), which writes
//! the next batches in one pass over the channel's sockets until it hands
//! the stream back.
//!
//! Which requests take this path is decided in `crate::connection::direct`;
//! everything unusual is left to the router, which frames streams the same.
//!
//! The response is chunked HTTP/1.1, like the router's, and ends with the
//! last chunk at shutdown. The write timeout applies as everywhere: a
//! client that accepts no bytes for that long is disconnected. A client
//! that closes is noticed at once (the socket is watched for reading).

use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use crate::cors::AllowOrigin;
use tokio::net::TcpStream;

use crate::AppState;
use crate::transport::grouped::{self, Left};
use crate::transport::live::{Framing, Live};
use std::sync::Arc;

/// The response head: the router's headers for a stream, chunked.
pub(crate) fn response_head(framing: Framing, allow_origin: Option<&AllowOrigin>) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: ");
    head.extend_from_slice(framing.content_type().as_bytes());
    head.extend_from_slice(b"\r\ncache-control: no-cache\r\nx-accel-buffering: no\r\n");
    if let Some(origin) = allow_origin {
        origin.write_lines(&mut head);
    }
    head.extend_from_slice(b"transfer-encoding: chunked\r\ndate: ");
    http_date(|date| head.extend_from_slice(date.as_bytes()));
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// Writes the stream until it ends, the client leaves, or the client
/// accepts nothing for the write timeout.
pub(crate) async fn stream_to(
    stream: TcpStream,
    mut live: Live,
    response_head: Vec<u8>,
    state: &AppState,
) {
    let timeout = state.config.write_timeout;
    let stream = Arc::new(stream);
    let mut unsent_head = response_head;
    loop {
        let mut frames = None;
        if unsent_head.is_empty() {
            // Caught up: the channel's group writes the stream meanwhile.
            match grouped::stay(&stream, &mut live, state).await {
                None | Some(Left::Resume) => {}
                Some(Left::Send(heartbeat)) => frames = Some(Some(heartbeat)),
                Some(Left::End) => return,
            }
        }
        let frames = match frames {
            Some(frames) => frames,
            None => tokio::select! {
                biased;
                frames = live.next_frames() => frames,
                () = client_gone(&stream) => return,
            },
        };
        let Some(frames) = frames else {
            // The stream ended: the last chunk, so clients see a complete
            // response rather than a cut one.
            let last: &[&[u8]] = &[&unsent_head, b"0\r\n\r\n"];
            let _ = send(&stream, last, &[], b"", timeout, state).await;
            return;
        };
        let size: usize = frames.iter().map(Bytes::len).sum();
        let mut size_line = [0u8; 18];
        let lead: [&[u8]; 2] = [&unsent_head, chunk_size_line(size, &mut size_line)];
        if send(&stream, &lead, &frames, b"\r\n", timeout, state)
            .await
            .is_err()
        {
            return;
        }
        unsent_head = Vec::new();
    }
}

/// Calls `write` with the current HTTP date (formatted once a second).
pub(crate) fn http_date(write: impl FnOnce(&str)) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DATE.with_borrow_mut(|(cached_second, text)| {
        if *cached_second != second || text.is_empty() {
            *cached_second = second;
            *text = httpdate::fmt_http_date(now);
        }
        write(text);
    });
}

/// Writes `size` in hex and CRLF into `line`; returns the bytes written.
pub(crate) fn chunk_size_line(size: usize, line: &mut [u8; 18]) -> &[u8] {
    let digits = (usize::BITS - size.leading_zeros()).div_ceil(4).max(1) as usize;
    for (index, byte) in line[..digits].iter_mut().enumerate() {
        let nibble = (size >> (4 * (digits - 1 - index))) & 0xf;
        *byte = b"0123456789abcdef"[nibble];
    }
    line[digits..digits + 2].copy_from_slice(b"\r\n");
    &line[..digits + 2]
}

/// Resolves when the client has closed its side (or the socket failed).
/// Anything it sends meanwhile is read and ignored: the stream is the last
/// answer this connection gives.
pub(crate) async fn client_gone(stream: &TcpStream) {
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

/// Writes `lead`, `frames` and `tail`, in as few writes as the socket
/// allows; a client that accepts nothing for `timeout` is given up.
pub(crate) async fn send(
    stream: &TcpStream,
    lead: &[&[u8]],
    frames: &[Bytes],
    tail: &[u8],
    timeout: Duration,
    state: &AppState,
) -> io::Result<()> {
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

/// The cache line of answers that must not be cached.
pub(crate) const NO_STORE: &str = "cache-control: no-store\r\n";

/// The head of a JSON answer.
pub(crate) struct AnswerHead<'a> {
    pub(crate) status: StatusCode,
    /// The body's length.
    pub(crate) length: usize,
    /// A `cache-control` line (such as [`NO_STORE`]), or nothing.
    pub(crate) cache_control: &'a str,
    /// The CORS lines, if the request's origin is allowed.
    pub(crate) allow_origin: Option<&'a AllowOrigin>,
    /// False to close the connection after the answer.
    pub(crate) keep_alive: bool,
    /// One more header, such as an error's `retry-after`.
    pub(crate) header: Option<(&'a str, &'a str)>,
}

impl AnswerHead<'_> {
    /// The head as bytes.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut head = Vec::with_capacity(256);
        self.push_to(&mut head);
        head
    }

    /// Appends the head to `head`.
    pub(crate) fn push_to(&self, head: &mut Vec<u8>) {
        let AnswerHead {
            status,
            length,
            cache_control,
            allow_origin,
            keep_alive,
            header,
        } = *self;
        // Written by hand rather than with `write!`: every publish's answer
        // starts here, and the formatting machinery was a visible share of it.
        head.extend_from_slice(b"HTTP/1.1 ");
        head.extend_from_slice(status.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
        head.extend_from_slice(b"\r\ncontent-type: application/json\r\n");
        head.extend_from_slice(cache_control.as_bytes());
        if let Some(origin) = allow_origin {
            origin.write_lines(head);
        }
        if let Some((name, value)) = header {
            for piece in [name, ": ", value, "\r\n"] {
                head.extend_from_slice(piece.as_bytes());
            }
        }
        if !keep_alive {
            head.extend_from_slice(b"connection: close\r\n");
        }
        head.extend_from_slice(b"content-length: ");
        head.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
        head.extend_from_slice(b"\r\ndate: ");
        http_date(|date| head.extend_from_slice(date.as_bytes()));
        head.extend_from_slice(b"\r\n\r\n");
    }
}

/// One non-blocking write of `segments`, skipping the first `skip` bytes
/// (already written): a plain write of a copy when what is left is small,
/// a vectored one otherwise.
pub(crate) fn write_from<'a>(
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
    let slices = &slices[..count];
    let total: usize = slices.iter().map(|slice| slice.len()).sum();
    if slices.len() > 1 && total <= SMALL_WRITE {
        // A few small pieces (a message and its chunk's framing): one
        // plain write of a copy costs the kernel less than a vectored one.
        let mut joined = [0u8; SMALL_WRITE];
        let mut end = 0;
        for slice in slices {
            joined[end..end + slice.len()].copy_from_slice(slice);
            end += slice.len();
        }
        return stream.try_write(&joined[..end]);
    }
    stream.try_write_vectored(slices)
}

/// Pieces that add up to at most this many bytes go out as one copy.
const SMALL_WRITE: usize = 1024;

#[cfg(test)]
mod tests {
    use super::{SMALL_WRITE, chunk_size_line, write_from};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// What `write_from` puts on a real socket for `segments` after `skip`.
    async fn written(segments: &[&[u8]], skip: usize) -> Vec<u8> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sender = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut receiver, _) = listener.accept().await.unwrap();
        sender.writable().await.unwrap();
        let count = write_from(&sender, segments.iter().copied(), skip).unwrap();
        drop(sender);
        let mut received = Vec::new();
        receiver.read_to_end(&mut received).await.unwrap();
        assert_eq!(received.len(), count);
        received
    }

    #[tokio::test]
    async fn small_and_large_writes_carry_the_segments_in_order_from_the_skip() {
        let small: [&[u8]; 4] = [b"3\r\n", b"abc", b"", b"\r\n"];
        assert_eq!(written(&small, 0).await, b"3\r\nabc\r\n");
        assert_eq!(written(&small, 4).await, b"bc\r\n");
        assert_eq!(written(&small, 7).await, b"\n");
        let big = vec![b'x'; SMALL_WRITE];
        let large: [&[u8]; 3] = [b"400\r\n", &big, b"\r\n"];
        let expected = [&large[0][1..], &big[..], b"\r\n"].concat();
        assert_eq!(written(&large, 1).await, expected);
    }

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        for size in [0, 1, 9, 10, 15, 16, 255, 256, 65_535, 1 << 20, usize::MAX] {
            let mut line = [0u8; 18];
            assert_eq!(
                chunk_size_line(size, &mut line),
                format!("{size:x}\r\n").as_bytes(),
                "{size}"
            );
        }
    }
}
