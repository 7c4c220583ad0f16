//! The client's one error type.

use std::time::Duration;

use comet_protocol::sse::ParseError;

/// What can go wrong. Errors ending a subscription are the ones retrying
/// cannot fix (a status that is neither 200 nor transient: 408, 429, 500,
/// 502, 503 or 504; a wrong content type; a stream beyond the size
/// limits); a server that is down, overloaded or behind a proxy that
/// failed, or a dropped connection, is retried, not reported.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not usable.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A channel name the contract does not allow.
    #[error("invalid channel name {name:?}: {reason}")]
    InvalidChannel {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request could not be made or its answer not read.
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with an unexpected status.
    #[error("the server answered {status}{}: {message}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Status {
        /// HTTP status.
        status: u16,
        /// Comet's error code, when the answer is a Comet JSON error.
        code: Option<String>,
        /// The server's explanation, or the start of its answer.
        message: String,
    },
    /// A stream answered with the wrong content type.
    #[error("the server answered with content type {found:?}, not {expected}")]
    ContentType {
        /// What the transport needs.
        expected: &'static str,
        /// What came.
        found: String,
    },
    /// An event stream went past the parser's limits.
    #[error("invalid event stream: {0}")]
    Parse(#[from] ParseError),
    /// An answer that is not what the protocol says.
    #[error("invalid answer from the server: {0}")]
    Protocol(String),
    /// The server did not answer in time.
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
    /// The token the subscription was allowed with expired, and the server
    /// ended it: subscribe again with a fresh token, from the last id
    /// received (nothing is lost).
    #[error("the token expired: subscribe again with a fresh one, from the last id received")]
    Expired,
}

/// True for answers that say "not now" rather than "never": a request
/// timeout (408), too many requests (429), and the server errors a proxy
/// or an overloaded server gives while it restarts or sheds load (500,
/// 502, 503, 504). Subscriptions retry these, with backoff, instead of
/// ending: a deploy behind a proxy, or a server full of subscribers (`503
/// too_many_subscribers`), must not end a long-running reader. Browsers'
/// `EventSource` gives up on them; this client does not.
pub(crate) fn is_transient(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}
