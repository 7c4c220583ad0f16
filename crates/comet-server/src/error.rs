//! The one error type of the HTTP API and its JSON form.
//!
//! Every error answer, on every endpoint, is `{"error": code, "message":
//! text}` with a fitting status (API.md). Handlers return [`ApiError`];
//! this module is the only place that turns one into a response.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use comet_hub::{HubError, StoreError};
use http::{HeaderValue, StatusCode, header};

/// An error answer: status, stable machine-readable code, human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable short code, for programs.
    pub code: &'static str,
    /// Explanation, for people.
    pub message: String,
    /// A header field the answer carries (the `WWW-Authenticate`
    /// challenge of a 401, the `Sec-WebSocket-Version` of a refused
    /// WebSocket handshake): name (lowercase) and value.
    pub header: Option<(&'static str, &'static str)>,
    /// For an error of one message of a batch publish: its position
    /// (`"index"` in the JSON).
    pub index: Option<usize>,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            header: None,
            index: None,
        }
    }

    /// The same error, about the message at `index` of a batch.
    pub fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        if !self.message.starts_with("message ") {
            self.message = format!("message {index} of the batch: {}", self.message);
        }
        self
    }

    /// 409: an idempotency key reused for other content.
    pub fn idempotency_conflict() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            "this idempotency key was used on this channel for a publish with another event \
             type or other data, within the idempotency window; a retry must send the same \
             message, and a new message needs a new key",
        )
    }

    /// The same error with a `WWW-Authenticate` challenge.
    pub fn with_challenge(self, challenge: &'static str) -> Self {
        self.with_header("www-authenticate", challenge)
    }

    /// The same error with the header field `name` (lowercase): `value`.
    pub fn with_header(mut self, name: &'static str, value: &'static str) -> Self {
        self.header = Some((name, value));
        self
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let mut value = serde_json::json!({ "error": self.code, "message": self.message });
        if let Some(index) = self.index {
            value["index"] = index.into();
        }
        Bytes::from(value.to_string())
    }
}

impl From<HubError> for ApiError {
    /// The store's own words (file paths, SQLite's messages) go to the
    /// server's log, never to the client.
    fn from(error: HubError) -> Self {
        if let HubError::IdempotencyConflict { index } = error {
            return Self::idempotency_conflict().at(index);
        }
        tracing::warn!(%error, "store failure");
        let message = match error {
            HubError::Store(StoreError::SequenceExhausted) => {
                "the history's sequence numbers are exhausted; nothing more can be stored"
            }
            _ => "the message store cannot serve this request now; the server's log says why",
        };
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(
                http::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the store says (paths, SQLite's words) stays in the log.
    #[test]
    fn a_store_failure_tells_the_client_nothing_of_the_store() {
        let error = ApiError::from(HubError::Store(StoreError::Unavailable(
            "committing published messages failed: disk I/O error at /var/lib/comet/history.db"
                .into(),
        )));
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code, "store_unavailable");
        let body = String::from_utf8(error.body().to_vec()).unwrap();
        assert!(!body.contains("history.db"), "{body}");
        assert!(!body.contains("disk I/O"), "{body}");
    }
}
