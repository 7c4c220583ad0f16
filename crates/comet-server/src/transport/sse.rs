//! `GET /sse/{channels}`: Server-Sent Events for the browser's `EventSource`
//! and every other SSE client.
//!
//! The stream opens with `retry:`, then carries one event per message (its
//! `id:` is the resume cursor, so an `EventSource` reconnect sends it back
//! as `Last-Event-ID`), `comet-gap` events when messages were missed, and
//! comment-line heartbeats (see `comet_protocol::sse`).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use http::HeaderMap;

use crate::AppState;
use crate::error::ApiError;
use crate::transport::live::{self, Framing};

/// Opens an SSE stream.
pub(crate) async fn sse(
    State(state): State<AppState>,
    channels: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    live::respond(state, channels, query.as_deref(), &headers, Framing::Sse).await
}
