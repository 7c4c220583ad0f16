//! The server's validated configuration. The binary turns flags and
//! environment variables into this; tests build it directly.

use std::time::Duration;

pub use crate::cors::CorsPolicy;

/// Limits and timings of the HTTP server. Every field has a production
/// default (see [`ServerConfig::default`]).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest publish body accepted, in bytes (413 beyond); also the
    /// largest data of one message of a batch.
    pub max_body_bytes: usize,
    /// Most messages in one batch publish (413 beyond).
    pub max_batch_messages: usize,
    /// Largest batch publish body accepted, in bytes (413 beyond).
    pub max_batch_bytes: usize,
    /// Most distinct channels in one subscription (400 beyond).
    pub max_channels_per_subscription: usize,
    /// Longest long-poll `wait`; longer requests are held this long.
    pub max_wait: Duration,
    /// The SSE `retry:` sent at the start of each stream.
    pub sse_retry: Duration,
    /// Idle time after which a stream sends a heartbeat.
    pub heartbeat: Duration,
    /// Most open connections; more are answered 503 and closed. Keep it
    /// within the process's open-files limit (see [`ConnectionLimits`]).
    pub max_connections: usize,
    /// Most open subscriptions (streams and polls being answered); more are
    /// answered `503 too_many_subscribers`. Below `max_connections`, so a
    /// server full of subscribers still takes publishes and health checks.
    pub max_subscribers: usize,
    /// Time a client has to send a complete request head (408 beyond), and
    /// how long an idle keep-alive connection is kept.
    pub header_read_timeout: Duration,
    /// Time a client has to send a whole request body once its head
    /// arrived (408 beyond, and the connection is closed).
    pub body_read_timeout: Duration,
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
            max_batch_messages: 1000,
            max_batch_bytes: 8 * 1024 * 1024,
            max_channels_per_subscription: 32,
            max_wait: Duration::from_secs(60),
            sse_retry: Duration::from_millis(3000),
            heartbeat: Duration::from_secs(15),
            max_connections: 10_000,
            max_subscribers: 9_500,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
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

/// Connection caps that fit a number of open files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// For [`ServerConfig::max_connections`].
    pub max_connections: usize,
    /// For [`ServerConfig::max_subscribers`].
    pub max_subscribers: usize,
}

/// Open files the process needs besides client connections: standard
/// streams, the listener, the runtime's own descriptors, the durable
/// store's database files (its writer and each of its readers hold three).
pub const RESERVED_FILES: u64 = 64;

impl ConnectionLimits {
    /// The caps for a process that may hold `open_files` descriptors:
    /// [`RESERVED_FILES`], the sockets of refusals in flight and the
    /// duplicates of publishers' sockets (one in twenty, 16 to 1,024) set
    /// aside, the rest for connections; of those, one in twenty (16 to
    /// 1,024) is kept for publishers, health checks and inspection.
    pub fn for_open_files(open_files: u64) -> Self {
        let usable = usize::try_from(open_files.saturating_sub(RESERVED_FILES))
            .unwrap_or(usize::MAX)
            .max(2);
        let set_aside = refusals_in_flight(usable) + answer_sockets(usable);
        Self::for_connections(usable.saturating_sub(set_aside))
    }

    /// `max_connections`, and the subscriber cap that leaves room for
    /// publishers within it.
    pub fn for_connections(max_connections: usize) -> Self {
        let max_connections = max_connections.max(2);
        let headroom = (max_connections / 20).clamp(16, 1024);
        Self {
            max_connections,
            max_subscribers: max_connections.saturating_sub(headroom).max(1),
        }
    }
}

/// How many publishing connections may hold a duplicate of their socket,
/// for their answers to be written by the store's writer
/// (`connection::at_commit`): one in twenty of `max_connections`, 16 to
/// 1,024. Beyond them a publish is answered by its own task.
pub(crate) fn answer_sockets(max_connections: usize) -> usize {
    (max_connections / 20).clamp(16, 1024)
}

/// How many refused connections may be in the middle of their answer at
/// once (each holds a socket for up to a second); further ones are closed
/// without an answer.
pub(crate) fn refusals_in_flight(max_connections: usize) -> usize {
    (max_connections / 32).clamp(8, 256)
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfig(String);

/// The longest duration any setting accepts: longer ones are mistakes, and
/// adding them to a clock reading could overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

impl ServerConfig {
    /// Checks that every limit and timing can work; the binary and the
    /// tests' servers both call it before serving.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let fail = |message: String| Err(InvalidConfig(message));
        let positive: [(&str, usize); 10] = [
            ("max_body_bytes (--max-body)", self.max_body_bytes),
            (
                "max_batch_messages (--max-batch-messages)",
                self.max_batch_messages,
            ),
            ("max_batch_bytes (--max-batch-body)", self.max_batch_bytes),
            (
                "max_channels_per_subscription (--max-channels)",
                self.max_channels_per_subscription,
            ),
            ("max_connections (--max-connections)", self.max_connections),
            ("max_subscribers (--max-subscribers)", self.max_subscribers),
            ("max_head_bytes", self.max_head_bytes),
            ("batch_messages", self.batch_messages),
            ("batch_bytes", self.batch_bytes),
            ("max_poll_bytes", self.max_poll_bytes),
        ];
        for (name, value) in positive {
            if value == 0 {
                return fail(format!("{name} must be at least 1"));
            }
        }
        if self.max_subscribers > self.max_connections {
            return fail(format!(
                "max_subscribers (--max-subscribers, {}) must not exceed max_connections \
                 (--max-connections, {}): publishers need connections too",
                self.max_subscribers, self.max_connections
            ));
        }
        if self.heartbeat < Duration::from_millis(10) {
            return fail("heartbeat (--heartbeat) must be at least 10ms".into());
        }
        let timings = [
            (
                "header_read_timeout (--header-timeout)",
                self.header_read_timeout,
            ),
            ("write_timeout (--write-timeout)", self.write_timeout),
            ("body_read_timeout (--body-timeout)", self.body_read_timeout),
        ];
        for (name, value) in timings {
            if value.is_zero() {
                return fail(format!("{name} must be more than 0"));
            }
        }
        let durations = [
            ("max_wait (--max-wait)", self.max_wait),
            ("sse_retry (--sse-retry)", self.sse_retry),
            ("heartbeat (--heartbeat)", self.heartbeat),
            (
                "header_read_timeout (--header-timeout)",
                self.header_read_timeout,
            ),
            ("write_timeout (--write-timeout)", self.write_timeout),
            ("body_read_timeout (--body-timeout)", self.body_read_timeout),
            ("shutdown_grace", self.shutdown_grace),
        ];
        for (name, value) in durations {
            if value > MAX_DURATION {
                return fail(format!("{name} must be at most 100 years"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configuration_is_valid() {
        ServerConfig::default().validate().unwrap();
    }

    #[test]
    fn limits_leave_room_for_the_process_and_for_publishers() {
        let limits = ConnectionLimits::for_open_files(20_000);
        // Refusals in flight: 256; duplicated publishers' sockets: 19,936 / 20.
        assert_eq!(limits.max_connections, 20_000 - 64 - 256 - 996);
        assert_eq!(
            limits.max_subscribers,
            limits.max_connections - limits.max_connections / 20
        );
        let small = ConnectionLimits::for_open_files(1024);
        assert!(small.max_connections < 1024 - 64);
        assert!(small.max_subscribers + 16 <= small.max_connections);
        // Even absurdly low limits give a working configuration.
        for files in [0, 1, 64, 100] {
            let limits = ConnectionLimits::for_open_files(files);
            let config = ServerConfig {
                max_connections: limits.max_connections,
                max_subscribers: limits.max_subscribers,
                ..ServerConfig::default()
            };
            config.validate().unwrap();
        }
    }

    #[test]
    fn impossible_settings_are_refused_with_their_name() {
        let refused = |change: fn(&mut ServerConfig)| {
            let mut config = ServerConfig::default();
            change(&mut config);
            config.validate().unwrap_err().to_string()
        };
        assert!(refused(|c| c.max_connections = 0).contains("--max-connections"));
        assert!(
            refused(|c| c.max_subscribers = c.max_connections + 1).contains("--max-subscribers")
        );
        assert!(refused(|c| c.max_wait = Duration::MAX).contains("--max-wait"));
        assert!(refused(|c| c.write_timeout = Duration::ZERO).contains("--write-timeout"));
    }
}
