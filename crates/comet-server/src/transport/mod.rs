//! The Comet transports, one module each, over one way of opening a
//! subscription (`open`) and one streaming loop (`live`).
//!
//! - [`poll`]: short polling, and long polling with `wait`;
//! - [`ndjson`]: HTTP streaming, one JSON object per line;
//! - [`sse`]: Server-Sent Events.
//!
//! All of them accept the same channel lists and resume rules
//! (`crate::params`), and all deliver the same shared, pre-encoded frames.

pub(crate) mod live;
pub mod ndjson;
pub mod poll;
pub mod sse;

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use comet_hub::Subscription;
use http::HeaderMap;

use crate::AppState;
use crate::error::ApiError;
use crate::params::{Query, Subscribe};

/// Validates a subscription request and opens the subscription.
pub(crate) async fn open(
    state: &AppState,
    channels: Result<Path<String>, PathRejection>,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(Subscribe, Subscription), ApiError> {
    let Path(channels) = channels.map_err(|_| {
        ApiError::bad_request("invalid_channel", "the channel list is not valid UTF-8")
    })?;
    let query = Query::parse(query)?;
    let request = Subscribe::parse(&channels, &query, headers, &state.config)?;
    let subscription = state
        .hub
        .subscribe(&request.channels, request.start.clone())
        .await?;
    Ok((request, subscription))
}
