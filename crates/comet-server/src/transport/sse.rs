//! `GET /sse/{channels}`: Server-Sent Events for the browser's `EventSource`
//! and every other SSE client.
//!
//! The stream opens with `retry:`, then carries one event per message (its
//! `id:` is the resume cursor, so an `EventSource` reconnect sends it back
//! as `Last-Event-ID`), `comet-gap` events when messages were missed, and
//! comment-line heartbeats. Headers keep proxies from buffering or caching.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use comet_protocol::sse;
use http::{HeaderMap, header};

use crate::AppState;
use crate::error::ApiError;
use crate::transport::live::{self, Framing};
use crate::transport::open;

/// Opens an SSE stream.
pub(crate) async fn sse(
    State(state): State<AppState>,
    channels: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, subscription) = open(&state, channels, query.as_deref(), &headers).await?;
    let retry_ms = state.config.sse_retry.as_millis() as u64;
    let body = live::body(
        state,
        subscription,
        Framing::Sse,
        Some(sse::encode_retry(retry_ms)),
    );
    Ok((
        [
            (header::CONTENT_TYPE, sse::CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response())
}
