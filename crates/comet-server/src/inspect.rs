//! Inspection endpoints: `GET /channels` (the list, in pages),
//! `GET /channels/{channel}`, `/healthz` and `/metrics`.
//!
//! With authorization configured, a channel is described only to whoever
//! may subscribe to it, the list shows only those channels, and the
//! metrics need a token granting every channel (`*`); `/healthz` needs no
//! token.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};

use comet_protocol::MessageId;

use crate::AppState;
use crate::auth;
use crate::error::ApiError;
use crate::params::{Query, channel_name};

pub(crate) async fn channel(
    State(state): State<AppState>,
    channel: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(channel) = channel.map_err(|_| {
        ApiError::bad_request("invalid_channel", "the channel name is not valid UTF-8")
    })?;
    let channel = channel_name(&channel)?;
    let query = Query::parse(query.as_deref())?;
    let token = auth::token(&headers, &query);
    state
        .rules
        .current()
        .subscribe(token, std::slice::from_ref(&channel))
        .map_err(|refusal| auth::refused(&state, refusal, token.is_some()))?;
    let Some(info) = state.hub.channel_info(&channel).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "channel_not_found",
            format!("channel {channel:?} never had a message"),
        ));
    };
    let body = serde_json::json!({
        "channel": channel.as_str(),
        "subscribers": info.subscribers,
        "messages": info.retained,
        "last_id": MessageId {
            position: info.last_id,
            channel: channel.clone(),
        }
        .to_string(),
    });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

/// Most channels one list answer holds.
const MAX_LIST: usize = 1000;

pub(crate) async fn channels(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = Query::parse(query.as_deref())?;
    let token = auth::token(&headers, &query);
    let visible = state
        .rules
        .current()
        .listing(token)
        .map_err(|refusal| auth::refused(&state, refusal, token.is_some()))?;
    let after = query.get("after").map(channel_name).transpose()?;
    let limit = match query.get("limit") {
        None => 100,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|limit| *limit > 0)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_limit",
                    format!("limit must be a whole number from 1 to {MAX_LIST}, not {raw:?}"),
                )
            })?
            .min(MAX_LIST),
    };
    let listed = state.hub.channels(after.as_ref(), limit).await?;
    let next = (listed.len() == limit)
        .then(|| listed.last().map(|(name, _)| name.to_string()))
        .flatten();
    // A page shows only what the request may see; `next` still follows
    // the whole list, so paging goes on past a page it sees nothing of.
    let channels: Vec<serde_json::Value> = listed
        .into_iter()
        .filter(|(name, _)| visible.shows(name))
        .map(|(name, info)| {
            serde_json::json!({
                "channel": name.as_str(),
                "subscribers": info.subscribers,
                "messages": info.retained,
                "last_id": MessageId { position: info.last_id, channel: name }.to_string(),
            })
        })
        .collect();
    let body = serde_json::json!({ "channels": channels, "next": next });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

pub(crate) async fn healthz(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.hub.check_health().await?;
    Ok(json_response(
        StatusCode::OK,
        r#"{"status":"ok"}"#.to_string(),
    ))
}

pub(crate) async fn metrics(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = Query::parse(query.as_deref())?;
    let token = auth::token(&headers, &query);
    state
        .rules
        .current()
        .metrics(token)
        .map_err(|refusal| auth::refused(&state, refusal, token.is_some()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response())
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
