//! Inspection endpoints: `GET /channels/{channel}`, `/healthz`, `/metrics`,
//! and the landing page at `/`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use http::{StatusCode, header};

use comet_protocol::MessageId;

use crate::AppState;
use crate::error::ApiError;
use crate::params::channel_name;

pub(crate) async fn channel(
    State(state): State<AppState>,
    channel: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(channel) = channel.map_err(|_| {
        ApiError::bad_request("invalid_channel", "the channel name is not valid UTF-8")
    })?;
    let channel = channel_name(&channel)?;
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

pub(crate) async fn healthz(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.hub.check_health().await?;
    Ok(json_response(
        StatusCode::OK,
        r#"{"status":"ok"}"#.to_string(),
    ))
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

pub(crate) async fn index() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><meta charset=utf-8><title>Comet</title>",
        "<h1>Comet</h1><p>A server-push hub. Publish with ",
        "<code>POST /pub/{channel}</code>; subscribe with ",
        "<code>/sse/{channels}</code>, <code>/stream/{channels}</code> or ",
        "<code>/poll/{channels}</code>. See <a href=\"/metrics\">/metrics</a> ",
        "and <a href=\"/healthz\">/healthz</a>.</p>"
    ))
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
