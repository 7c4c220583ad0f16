//! Answering while the server is not ready yet: a node whose store is still
//! being reached (Redis not up yet) listens already, so that health checks
//! and clients get a clear `503 store_unavailable` instead of a refused
//! connection.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::ApiError;

/// Most bytes of a request head read before answering.
const HEAD_LIMIT: usize = 16 * 1024;

/// How long a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Awaits `ready`, answering every request that arrives on `listener`
/// meanwhile with `503 store_unavailable` and `message` (and closing the
/// connection). Connections still being answered when `ready` completes
/// finish on their own.
pub async fn unavailable_until<T>(
    listener: &TcpListener,
    ready: impl Future<Output = T>,
    message: String,
) -> T {
    let error = ApiError::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        message,
    );
    let body = error.body();
    let answer: bytes::Bytes = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\ncache-control: no-store\r\n\
         connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes()
    .into_iter()
    .chain(body.iter().copied())
    .collect::<Vec<u8>>()
    .into();
    tokio::pin!(ready);
    loop {
        tokio::select! {
            biased;
            value = &mut ready => return value,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(answer_once(stream, answer.clone()));
                }
            }
        }
    }
}

/// Reads one request head (within limits) and writes `answer`.
async fn answer_once(mut stream: TcpStream, answer: bytes::Bytes) {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0; 4096];
    let read = tokio::time::timeout(HEAD_TIMEOUT, async {
        while head.len() < HEAD_LIMIT && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buffer[..n]),
            }
        }
        true
    })
    .await;
    if matches!(read, Ok(true)) {
        let _ = stream.write_all(&answer).await;
        let _ = stream.shutdown().await;
    }
}
