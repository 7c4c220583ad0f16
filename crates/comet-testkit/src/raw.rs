//! Raw HTTP over TCP, for requests no well-behaved client would send and for
//! reading exactly what the server wrote.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::within;

/// A raw response: status code, head, body (de-chunked if chunked).
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The head as text (status line and headers).
    pub head: String,
    /// The body.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` code of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }
}

/// Connects to `address`.
pub async fn connect(address: SocketAddr) -> TcpStream {
    within("a TCP connection", TcpStream::connect(address))
        .await
        .expect("connect")
}

/// Sends `request` on a new connection and reads one response to the end
/// (the server closes, or the length is reached).
pub async fn exchange(address: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = connect(address).await;
    stream.write_all(request).await.expect("send the request");
    read_response(&mut stream).await
}

/// The status code of a response head.
fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code")
}

/// Reads `count` responses with a `Content-Length` each, as a client that
/// pipelined its requests gets them: each whole, in order, with nothing
/// after the last.
pub async fn read_pipelined(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    count: usize,
) -> Vec<RawResponse> {
    let mut received = Vec::new();
    let mut responses = Vec::with_capacity(count);
    let mut chunk = vec![0u8; 64 * 1024];
    while responses.len() < count {
        if let Some(response) = take_response(&mut received) {
            responses.push(response);
            continue;
        }
        let read = within("more responses", stream.read(&mut chunk))
            .await
            .expect("read");
        assert!(
            read > 0,
            "the server closed after {} responses",
            responses.len()
        );
        received.extend_from_slice(&chunk[..read]);
    }
    assert!(received.is_empty(), "bytes after the last response");
    responses
}

/// The first response of `received`, taken out of it, once it is whole.
fn take_response(received: &mut Vec<u8>) -> Option<RawResponse> {
    let head_end = find(received, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let mut response = RawResponse {
        status: status_of(&head),
        head,
        body: Vec::new(),
    };
    let length: usize = response
        .header("content-length")
        .expect("a response with a length")
        .parse()
        .expect("numeric content-length");
    let end = head_end + 4 + length;
    if received.len() < end {
        return None;
    }
    response.body = received[head_end + 4..end].to_vec();
    received.drain(..end);
    Some(response)
}

/// Reads one response from `stream`.
pub async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let (head, mut rest) = read_head(stream).await;
    let status = status_of(&head);
    let mut response = RawResponse {
        status,
        head,
        body: Vec::new(),
    };
    if status == 204 || status == 304 {
        // No body, whatever the head says (RFC 9112, section 6.3).
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length.parse().expect("numeric content-length");
        while rest.len() < length {
            let mut chunk = [0u8; 4096];
            let read = within("a response body", stream.read(&mut chunk))
                .await
                .expect("read");
            assert!(read > 0, "connection closed inside the body");
            rest.extend_from_slice(&chunk[..read]);
        }
        rest.truncate(length);
        response.body = rest;
    } else if response
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        response.body = dechunk_to_end(stream, rest).await;
    } else {
        let mut all = rest;
        let _ = within("the end of a response", stream.read_to_end(&mut all)).await;
        response.body = all;
    }
    response
}

async fn dechunk_to_end(stream: &mut TcpStream, mut pending: Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(chunk) = next_chunk(stream, &mut pending).await {
        body.extend_from_slice(&chunk);
    }
    body
}

/// The next chunk of a chunked body: `None` at the last chunk, or when the
/// connection closes.
async fn next_chunk(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<bytes::Bytes> {
    loop {
        if let Some(line_end) = find(pending, b"\r\n") {
            let size_text = String::from_utf8_lossy(&pending[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .expect("chunk size");
            if size == 0 {
                return None;
            }
            if pending.len() >= line_end + 2 + size + 2 {
                let data =
                    bytes::Bytes::copy_from_slice(&pending[line_end + 2..line_end + 2 + size]);
                pending.drain(..line_end + 2 + size + 2);
                return Some(data);
            }
        }
        let mut chunk = [0u8; 16384];
        match within("a chunk", stream.read(&mut chunk)).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => pending.extend_from_slice(&chunk[..read]),
        }
    }
}

/// Opens a stream with a tiny receive buffer, sends `request`, and does not
/// read: a subscriber that is stuck.
pub async fn stuck_client(address: SocketAddr, request: &[u8]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let mut stream = within("a TCP connection", socket.connect(address))
        .await
        .expect("connect");
    stream.write_all(request).await.expect("send the request");
    stream
}

/// Reads the head of a chunked response on `stream` and turns the rest into
/// a stream of de-chunked body bytes.
pub async fn chunked_body(
    mut stream: TcpStream,
) -> futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>> {
    use futures::StreamExt;
    let (head, pending) = read_head(&mut stream).await;
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("transfer-encoding: chunked"),
        "not chunked: {head}"
    );
    futures::stream::unfold((stream, pending), |(mut stream, mut pending)| async move {
        let chunk = next_chunk(&mut stream, &mut pending).await?;
        Some((Ok(chunk), (stream, pending)))
    })
    .boxed()
}

/// Whether the server closes `stream` within `limit` (reading and
/// discarding anything it sends).
pub async fn closes_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut sink = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Reads a response head (status line and headers) and nothing more that
/// matters: bytes after it are dropped.
pub async fn read_head_only(stream: &mut TcpStream) -> String {
    read_head(stream).await.0
}

/// Reads a response head; returns it as text and the bytes read after it.
async fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0u8; 4096];
        let read = within("a response head", stream.read(&mut chunk))
            .await
            .expect("read");
        assert!(
            read > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buffer)
        );
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    (head, buffer[head_end + 4..].to_vec())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
