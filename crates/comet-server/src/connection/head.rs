//! Reading request heads ourselves, so that the errors hyper would answer
//! with a bare status or a silent close get a JSON answer instead: a head
//! that is too slow (408), too large (431) or not HTTP (400). Requests the
//! direct path does not serve are handed to hyper unchanged.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Most header lines accepted in a request head.
const MAX_HEADERS: usize = 100;

pub(crate) enum HeadError {
    Timeout,
    TooLarge,
    Malformed(String),
}

/// Why no request came, when none did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoRequest {
    /// The client closed the connection.
    ClientClosed,
    /// Nothing arrived within the header timeout: an idle connection
    /// (a fresh one, or kept alive after an answer).
    Idle,
    /// The socket failed.
    ReadFailed,
}

/// Reads until `buffer` starts with a complete request head (it may
/// already hold one, or part of one: bytes left over from the previous
/// request) and returns what `parse` made of it. `parse` sees the request
/// parsed by httparse (once per attempt; a head is never parsed twice) and
/// the head's length. `Ok(Err(why))`: the client closed, sent nothing
/// before the timeout (an idle connection), or the socket failed, and the
/// connection should just be closed.
pub(crate) async fn read<T>(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
    timeout: Duration,
    max_bytes: usize,
    mut parse: impl FnMut(&httparse::Request<'_, '_>, usize) -> T,
) -> Result<Result<T, NoRequest>, HeadError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !buffer.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(buffer) {
                Ok(httparse::Status::Complete(length)) => {
                    return Ok(Ok(parse(&request, length)));
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
                Err(error) => return Err(HeadError::Malformed(error.to_string())),
            }
        }
        if buffer.len() >= max_bytes {
            return Err(HeadError::TooLarge);
        }
        buffer.reserve(1024.min(max_bytes - buffer.len()).max(1));
        let read = tokio::time::timeout_at(deadline, stream.read_buf(buffer)).await;
        match read {
            Err(_) if buffer.is_empty() => return Ok(Err(NoRequest::Idle)),
            Err(_) => return Err(HeadError::Timeout),
            Ok(Err(_)) => return Ok(Err(NoRequest::ReadFailed)),
            Ok(Ok(0)) => return Ok(Err(NoRequest::ClientClosed)),
            Ok(Ok(_)) => {}
        }
    }
}

impl From<NoRequest> for crate::metrics::Closed {
    fn from(why: NoRequest) -> Self {
        match why {
            NoRequest::ClientClosed => Self::ClientClosed,
            NoRequest::Idle => Self::Idle,
            NoRequest::ReadFailed => Self::ReadFailed,
        }
    }
}
