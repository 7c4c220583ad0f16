//! The server's validated configuration. The binary turns flags and
//! environment variables into this; tests build it directly.

use std::time::Duration;

pub use crate::cors::CorsPolicy;

/// Limits and timings of the HTTP server. Every field has a production
/// default (see [`ServerConfig::default`]).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest publish body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most distinct channels in one subscription (400 beyond).
    pub max_channels_per_subscription: usize,
    /// Longest long-poll `wait`; longer requests are held this long.
    pub max_wait: Duration,
    /// The SSE `retry:` sent at the start of each stream.
    pub sse_retry: Duration,
    /// Idle time after which a stream sends a heartbeat.
    pub heartbeat: Duration,
    /// Most open connections; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time a client has to send a complete request head (408 beyond), and
    /// how long an idle keep-alive connection is kept.
    pub header_read_timeout: Duration,
    /// Largest request head accepted, in bytes (431 beyond).
    pub max_head_bytes: usize,
    /// A connection that accepts no bytes for this long while the server has
    /// some to send is closed (a stuck subscriber); it resumes by id.
    pub write_timeout: Duration,
    /// Most messages read and written to a stream in one go, and most
    /// messages in one poll answer.
    pub batch_messages: usize,
    /// Most bytes of message data a stream takes from the hub in one go (a
    /// larger single message still goes). Bounds what a stuck subscriber
    /// holds.
    pub batch_bytes: usize,
    /// Poll answers stop adding messages beyond this many bytes of message
    /// data (one message
    /// is always sent, whatever its size).
    pub max_poll_bytes: usize,
    /// Largest `backlog` honoured (larger requests get this many).
    pub max_backlog: usize,
    /// Time given to open connections to finish at shutdown.
    pub shutdown_grace: Duration,
    /// Which other origins' pages may use the server.
    pub cors: CorsPolicy,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_channels_per_subscription: 32,
            max_wait: Duration::from_secs(60),
            sse_retry: Duration::from_millis(3000),
            heartbeat: Duration::from_secs(15),
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            max_head_bytes: 32 * 1024,
            write_timeout: Duration::from_secs(30),
            batch_messages: 256,
            batch_bytes: 256 * 1024,
            max_poll_bytes: 4 * 1024 * 1024,
            max_backlog: 1000,
            shutdown_grace: Duration::from_secs(10),
            cors: CorsPolicy::SameOrigin,
        }
    }
}
