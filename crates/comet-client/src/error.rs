//! The client's one error type.

use std::time::Duration;

use comet_protocol::sse::ParseError;

/// What can go wrong. Errors ending a subscription are the ones the
/// standard treats as fatal (a status other than 200, a wrong content type,
/// a stream beyond the size limits); a server that is down or a dropped
/// connection is retried, not reported.
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
}
