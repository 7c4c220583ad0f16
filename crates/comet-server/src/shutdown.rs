//! The server's shutdown, as every connection sees it: something to wait
//! on (streams, held polls and idle connections end when it begins) and a
//! question asked before each keep-alive answer, whether it has begun.
//!
//! The token alone answers the question under its lock; a publish asked it
//! several times, so the answer is also kept in a flag read without one.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Begun once, never undone.
#[derive(Default)]
pub(crate) struct Shutdown {
    token: CancellationToken,
    begun: AtomicBool,
}

impl Shutdown {
    /// Begins the shutdown: every wait returns, and `is_cancelled` says so.
    pub(crate) fn cancel(&self) {
        self.begun.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether the shutdown has begun.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.begun.load(Ordering::Acquire)
    }

    /// Returns once the shutdown has begun.
    pub(crate) fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }
}
