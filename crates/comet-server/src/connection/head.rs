//! Reading request heads ourselves, so that the errors hyper would answer
//! with a bare status or a silent close get a JSON answer instead: a head
//! that is too slow (408), too large (431) or not HTTP (400). Requests the
//! direct path does not serve are handed to hyper unchanged.

use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

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

/// When a connection's next request head is due: one timer for the
/// connection's life. Setting the deadline for the next head (once per
/// request) only stores it; the timer, never later than the deadline, is
/// set again when it fires early. A timer per request entered the runtime's
/// timer wheel and left it again for every request, a visible share of a
/// publish.
pub(crate) struct HeadDeadline {
    due: Instant,
    timer: Pin<Box<Sleep>>,
}

impl HeadDeadline {
    /// A deadline `timeout` from now.
    pub(crate) fn new(timeout: Duration) -> Self {
        let due = Instant::now() + timeout;
        Self {
            due,
            timer: Box::pin(tokio::time::sleep_until(due)),
        }
    }

    /// Moves the deadline to `timeout` from now (never earlier: time only
    /// goes on, so the timer stays at or before it).
    fn restart(&mut self, timeout: Duration) {
        self.due = Instant::now() + timeout;
    }

    /// Returns once the deadline has passed.
    async fn passed(&mut self) {
        loop {
            self.timer.as_mut().await;
            if self.timer.deadline() >= self.due {
                return;
            }
            self.timer.as_mut().reset(self.due);
        }
    }
}

/// Reads until `buffer` starts with a complete request head (it may
/// already hold one, or part of one: bytes left over from the previous
/// request) and returns what `parse` made of it. `parse` sees the request
/// parsed by httparse (once per attempt; a head is never parsed twice) and
/// the head's length. `Ok(Err(why))`: the client closed, sent nothing
/// before the timeout (an idle connection), or the socket failed, and the
/// connection should just be closed. The timeout runs on the connection's
/// `deadline`.
pub(crate) async fn read<T>(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
    deadline: &mut HeadDeadline,
    timeout: Duration,
    max_bytes: usize,
    mut parse: impl FnMut(&httparse::Request<'_, '_>, usize) -> T,
) -> Result<Result<T, NoRequest>, HeadError> {
    deadline.restart(timeout);
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
        let read = tokio::select! {
            biased;
            read = stream.read_buf(buffer) => Some(read),
            () = deadline.passed() => None,
        };
        match read {
            None if buffer.is_empty() => return Ok(Err(NoRequest::Idle)),
            None => return Err(HeadError::Timeout),
            Some(Err(_)) => return Ok(Err(NoRequest::ReadFailed)),
            Some(Ok(0)) => return Ok(Err(NoRequest::ClientClosed)),
            Some(Ok(_)) => {}
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
