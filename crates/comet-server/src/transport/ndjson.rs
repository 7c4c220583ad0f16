//! `GET /stream/{channels}`: HTTP streaming, for clients that read a growing
//! response (fetch streams, XHR at `readyState` 3).
//!
//! One JSON message object per line, flushed as published; `{"gap":{…}}`
//! lines when messages were missed; `{"heartbeat":true}` lines when idle.
//! A line without an `id` is never a message.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use comet_protocol::json;
use http::{HeaderMap, header};

use crate::AppState;
use crate::error::ApiError;
use crate::transport::live::{self, Framing};
use crate::transport::open;

/// Opens an NDJSON stream.
pub(crate) async fn stream(
    State(state): State<AppState>,
    channels: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, subscription) = open(&state, channels, query.as_deref(), &headers).await?;
    let body = live::body(state, subscription, Framing::Ndjson, None);
    Ok((
        [
            (header::CONTENT_TYPE, json::NDJSON_CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response())
}
