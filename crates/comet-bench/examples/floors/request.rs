//! What both floor servers read of a request on a keep-alive connection:
//! its head and its body (by `Content-Length`). Just enough HTTP/1.1 for
//! the load generator's requests; not a parser for anything else.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// One request as read.
pub struct Request {
    /// The head, from the request line to the blank line.
    head: String,
    pub body: Vec<u8>,
}

impl Request {
    /// The method and the path of the request line.
    pub fn method_and_path(&self) -> (&str, &str) {
        let mut words = self.head.split(' ');
        (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
        )
    }
}

/// Reads the next request from `socket`; what arrived after it stays in
/// `buffer` for the next call. `None` once the client closed.
pub async fn read_request(
    socket: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> std::io::Result<Option<Request>> {
    let (head_end, content_length) = loop {
        if let Some(found) = complete_head(buffer) {
            break found;
        }
        if socket.read_buf(buffer).await? == 0 {
            return Ok(None);
        }
    };
    while buffer.len() < head_end + content_length {
        if socket.read_buf(buffer).await? == 0 {
            return Ok(None);
        }
    }
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let body = buffer[head_end..head_end + content_length].to_vec();
    buffer.drain(..head_end + content_length);
    Ok(Some(Request { head, body }))
}

/// Where a request's head ends in `buffer` and its `Content-Length`, once
/// the whole head has arrived.
fn complete_head(buffer: &[u8]) -> Option<(usize, usize)> {
    let end = buffer.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buffer[..end]).ok()?;
    let content_length = head
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    Some((end, content_length))
}
