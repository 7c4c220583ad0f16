//! The process's open-files limit, and the connection caps that fit it.
//!
//! Every connection is a file descriptor. Linux starts most processes with
//! a soft limit of 1,024 open files, far below what a push server needs,
//! under a hard limit that is usually much higher. So `serve` raises its
//! soft limit to the hard one at start (as nginx's `worker_rlimit_nofile`
//! and Go's runtime do) and derives its default caps from the result,
//! leaving room for the store's files and for publishers: a server full of
//! subscribers must still accept publishes and health checks.

use comet_server::ConnectionLimits;

/// The open-files limit as `serve` left it.
#[derive(Clone, Copy, Debug)]
pub struct OpenFiles {
    /// The soft limit now in force.
    pub soft: u64,
    /// The soft limit found at start, when it was raised.
    pub raised_from: Option<u64>,
}

/// Raises the soft open-files limit to the hard limit. If that fails, the
/// limit stays as it was (and is reported as it is).
pub fn raise_open_files_limit() -> OpenFiles {
    let Ok((soft, hard)) = rlimit::Resource::NOFILE.get() else {
        // No way to read it: assume the usual default.
        return OpenFiles {
            soft: 1024,
            raised_from: None,
        };
    };
    if soft >= hard {
        return OpenFiles {
            soft,
            raised_from: None,
        };
    }
    match rlimit::increase_nofile_limit(hard) {
        Ok(raised) if raised > soft => OpenFiles {
            soft: raised,
            raised_from: Some(soft),
        },
        Ok(_) | Err(_) => OpenFiles {
            soft,
            raised_from: None,
        },
    }
}

/// The caps to serve with: the operator's, where given, but never more
/// connections than the open files allow (with a warning); otherwise
/// derived from the open-files limit.
pub fn connection_limits(
    open_files: OpenFiles,
    max_connections: Option<usize>,
    max_subscribers: Option<usize>,
) -> ConnectionLimits {
    let fitting = ConnectionLimits::for_open_files(open_files.soft);
    let max_connections = match max_connections {
        Some(asked) if asked > fitting.max_connections => {
            tracing::warn!(
                asked,
                open_files_limit = open_files.soft,
                using = fitting.max_connections,
                "--max-connections is more than the open-files limit allows \
                 (raise it with `ulimit -n` or LimitNOFILE= in a systemd unit)"
            );
            fitting.max_connections
        }
        Some(asked) => asked,
        None => fitting.max_connections,
    };
    let derived = ConnectionLimits::for_connections(max_connections);
    ConnectionLimits {
        max_connections,
        max_subscribers: max_subscribers.unwrap_or(derived.max_subscribers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(soft: u64) -> OpenFiles {
        OpenFiles {
            soft,
            raised_from: None,
        }
    }

    #[test]
    fn defaults_come_from_the_open_files_limit() {
        let limits = connection_limits(files(20_000), None, None);
        assert_eq!(limits, ConnectionLimits::for_open_files(20_000));
        assert!(limits.max_subscribers < limits.max_connections);
    }

    #[test]
    fn an_operator_cap_is_kept_unless_the_files_cannot_hold_it() {
        let limits = connection_limits(files(20_000), Some(500), None);
        assert_eq!(limits.max_connections, 500);
        assert_eq!(limits.max_subscribers, 500 - 25);
        let limits = connection_limits(files(1024), Some(50_000), Some(100));
        assert_eq!(
            limits.max_connections,
            ConnectionLimits::for_open_files(1024).max_connections
        );
        assert_eq!(limits.max_subscribers, 100);
    }
}
