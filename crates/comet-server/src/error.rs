//! The one error type of the HTTP API and its JSON form.
//!
//! Every error answer, on every endpoint, is `{"error": code, "message":
//! text}` with a fitting status (API.md). Handlers return [`ApiError`];
//! this module is the only place that turns one into a response.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use comet_hub::HubError;
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
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let value = serde_json::json!({ "error": self.code, "message": self.message });
        Bytes::from(value.to_string())
    }
}

impl From<HubError> for ApiError {
    fn from(error: HubError) -> Self {
        tracing::warn!(%error, "store failure");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("the message store cannot serve this request now: {error}"),
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
        response
    }
}
