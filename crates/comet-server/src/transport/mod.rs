//! The Comet transports, one module each, over one way of opening a
//! subscription (`open`), what allowed it (`grant`, judged again when the
//! rules change) and one streaming loop (`live`).
//!
//! - [`poll`]: short polling, and long polling with `wait`;
//! - [`ndjson`]: HTTP streaming, one JSON object per line;
//! - [`sse`]: Server-Sent Events;
//! - `websocket`: WebSocket, the NDJSON stream's objects in text frames.
//!
//! The streams are usually served without the router at all: `socket`
//! takes a connection whose first request opens one and writes the stream
//! straight to it, with no HTTP machinery held per subscriber; WebSocket is
//! served only that way (`websocket`), and the router answers a `/ws/`
//! request it is handed with the error it has, or a 400.
//!
//! All of them accept the same channel lists and resume rules
//! (`crate::params`), and all deliver the same shared, pre-encoded frames.

pub(crate) mod grant;
pub(crate) mod grouped;
pub(crate) mod live;
pub mod ndjson;
pub mod poll;
pub(crate) mod socket;
pub mod sse;
pub(crate) mod websocket;

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use comet_hub::Subscription;
use http::HeaderMap;
use tokio::sync::OwnedSemaphorePermit;

use std::time::SystemTime;

use crate::AppState;
use crate::auth;
use crate::error::ApiError;
use crate::params::{Query, Subscribe};
use grant::Grant;

/// The channel list of a route's `{channels}` segment.
pub(crate) fn channel_list(
    channels: Result<Path<String>, PathRejection>,
) -> Result<String, ApiError> {
    let Path(channels) = channels.map_err(|_| {
        ApiError::bad_request("invalid_channel", "the channel list is not valid UTF-8")
    })?;
    Ok(channels)
}

/// A validated request's open subscription, holding its place under the
/// subscriber cap for as long as it lives.
pub(crate) struct Opened {
    pub(crate) request: Subscribe,
    pub(crate) subscription: Subscription,
    pub(crate) place: OwnedSemaphorePermit,
    /// When the credential that allowed it expires: the subscription ends
    /// then.
    pub(crate) expires_at: Option<SystemTime>,
    /// What allowed it, to judge it again if the rules change.
    pub(crate) grant: Grant,
}

/// Validates a subscription request, authorizes it, takes a place under
/// the subscriber cap (a bad request is told what is wrong with it even
/// when the server is full) and opens the subscription.
pub(crate) async fn open(
    state: &AppState,
    channels: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Opened, ApiError> {
    let query = Query::parse(query)?;
    let request = Subscribe::parse(channels, &query, headers, &state.config)?;
    let token = auth::token(headers, &query);
    // Watching the rules before judging: a change while this is judged is
    // judged again, never missed.
    let grant = Grant::new(token, request.channels.names(), &state.rules);
    let access = state
        .rules
        .current()
        .subscribe(token, request.channels.names())
        .map_err(|refusal| auth::refused(state, refusal, token.is_some()))?;
    let place = state.subscriber_place()?;
    let subscription = state
        .hub
        .subscribe(&request.channels, request.start.clone())
        .await?;
    Ok(Opened {
        request,
        subscription,
        place,
        expires_at: access.expires_at,
        grant,
    })
}
