//! `GET /stream/{channels}`: HTTP streaming, for clients that read a growing
//! response (fetch streams, XHR at `readyState` 3).
//!
//! One JSON message object per line, flushed as published; `{"gap":{…}}`
//! lines when messages were missed; `{"heartbeat":true}` lines at the start
//! and when idle. A line without an `id` is never a message.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use http::HeaderMap;

use crate::AppState;
use crate::error::ApiError;
use crate::transport::live::{self, Framing};

/// Opens an NDJSON stream.
pub(crate) async fn stream(
    State(state): State<AppState>,
    channels: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    live::respond(state, channels, query.as_deref(), &headers, Framing::Ndjson).await
}
