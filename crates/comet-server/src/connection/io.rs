//! The connection's byte stream as hyper sees it: first the bytes of the
//! head already read, then the socket; and writes that fail once the client
//! has accepted nothing for the write timeout.
//!
//! The timer starts when a write finds the socket full and is cleared by any
//! write that makes progress, so a slow client that keeps reading is never
//! cut off; only a stuck one is.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::AppState;

pub(crate) struct ConnectionIo {
    stream: TcpStream,
    unread: Bytes,
    write_timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    state: AppState,
}

impl ConnectionIo {
    pub(crate) fn new(
        stream: TcpStream,
        unread: Bytes,
        write_timeout: Duration,
        state: AppState,
    ) -> Self {
        Self {
            stream,
            unread,
            write_timeout,
            stalled: None,
            state,
        }
    }

    /// Maps a pending write to a timeout error once the client has been
    /// stuck for the write timeout.
    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.write_timeout;
                let stalled = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(stalled.as_mut().poll(cx));
                self.state.metrics.stalled_disconnect();
                tracing::debug!(
                    "closing a connection that accepted no bytes for the write timeout"
                );
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client accepted no bytes for the write timeout",
                )))
            }
        }
    }
}

impl AsyncRead for ConnectionIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.unread.is_empty() {
            let count = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread[..count]);
            this.unread.advance(count);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnectionIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.on_write(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.on_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_flush(cx);
        this.on_write(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
