//! `POST /pub/{channel}`: validate, authorize, store, answer 201 with the
//! id (or 200 with the original's, for a repeat of an `Idempotency-Key`).
//!
//! The channel, the query, the idempotency key and the credentials are
//! checked first ([`check`]), before any of the body is read: an
//! unauthorized publisher cannot make the server read a megabyte. The body
//! is the message data, read up to the configured limit (413 beyond,
//! decided from `Content-Length` before reading when it is given). The
//! answer is sent only once the store has the message ([`store`]).

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};

use std::net::IpAddr;

use bytes::Bytes;
use comet_hub::{HubError, Publication, Published};
use comet_protocol::{ChannelName, Data, EventType, IdempotencyKey};
use http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::AppState;
use crate::auth;
use crate::connection::PeerIp;
use crate::cors::AllowOrigin;
use crate::error::ApiError;
use crate::params::{Query, channel_name, event_type};
use crate::transport::socket;

pub(crate) async fn publish(
    State(state): State<AppState>,
    channel: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    peer: Option<Extension<PeerIp>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Path(channel) = channel.map_err(|_| {
        ApiError::bad_request("invalid_channel", "the channel name is not valid UTF-8")
    })?;
    let peer = peer.map(|Extension(PeerIp(ip))| ip);
    let channel = channel_name(&channel)?;
    let checked = check(&state, channel, query.as_deref(), &headers, peer)?;
    let reading = read_body(body, &headers, state.config.max_body_bytes);
    let body = tokio::time::timeout(state.config.body_read_timeout, reading)
        .await
        .map_err(|_| crate::connection::body_timeout(&state.config))??;
    // Hyper hands the body out as a slice of its read buffer; a retained
    // message must not keep that whole buffer alive.
    let body = Bytes::copy_from_slice(&body);
    let (status, answer) = store(&state, checked, body).await?;
    Ok((status, [(header::CONTENT_TYPE, "application/json")], answer).into_response())
}

/// A publish whose channel, event type, idempotency key and credentials
/// are checked.
pub(crate) struct Checked {
    channel: ChannelName,
    event: EventType,
    idempotency_key: Option<IdempotencyKey>,
}

impl Checked {
    /// The channel published to.
    pub(crate) fn channel(&self) -> &ChannelName {
        &self.channel
    }
}

/// Checks a publish to `channel` with the request's `query`, before its
/// body is read.
pub(crate) fn check(
    state: &AppState,
    channel: ChannelName,
    query: Option<&str>,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<Checked, ApiError> {
    let query = Query::parse(query)?;
    let event = event_type(&query)?;
    let idempotency_key = idempotency_key(headers)?;
    let token = auth::token(headers, &query);
    state
        .rules
        .current()
        .publish(token, peer, std::slice::from_ref(&channel))
        .map_err(|refusal| auth::refused(state, refusal, token.is_some()))?;
    Ok(Checked {
        channel,
        event,
        idempotency_key,
    })
}

/// The `Idempotency-Key` header, validated; one at most.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "give one Idempotency-Key header at most",
        ));
    }
    IdempotencyKey::from_bytes(value.as_bytes())
        .map(Some)
        .map_err(|error| ApiError::bad_request("invalid_idempotency_key", error.to_string()))
}

/// The header that makes a publish safe to retry.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The message data of a publish body: UTF-8 text.
pub(crate) fn message_data(body: Bytes) -> Result<Data, ApiError> {
    Data::from_utf8(body).map_err(|error| {
        ApiError::bad_request(
            "invalid_data",
            format!("message data must be UTF-8 text: {error}"),
        )
    })
}

/// Publishes `body` as checked: `201 Created` and the JSON answer, or
/// `200` and the original's answer for a repeat of its idempotency key.
pub(crate) async fn store(
    state: &AppState,
    checked: Checked,
    body: Bytes,
) -> Result<(StatusCode, Bytes), ApiError> {
    let Checked {
        channel,
        event,
        idempotency_key,
    } = checked;
    let data = message_data(body)?;
    let published = match idempotency_key {
        None => state.hub.publish(&channel, event, data).await,
        Some(key) => {
            let publication = Publication {
                idempotency_key: Some(key),
                ..Publication::new(channel.clone(), event, data)
            };
            state
                .hub
                .publish_batch(vec![publication])
                .await
                .map(|mut published| published.remove(0))
        }
    };
    Ok(answer_to(&channel, &published.map_err(api_error)?))
}

/// Publishes `body` as checked, giving `answer` the outcome as soon as it
/// is stored (see the hub's `publish_answering`): what `answer` returned
/// if it was given the outcome, else the answer [`store`] would give.
pub(crate) async fn store_answering<T: Send + 'static>(
    state: &AppState,
    checked: Checked,
    body: Bytes,
    answer: impl FnOnce(&Published) -> T + Send + 'static,
) -> Result<Result<T, (StatusCode, Bytes)>, ApiError> {
    let data = message_data(body)?;
    let publication = Publication {
        idempotency_key: checked.idempotency_key,
        ..Publication::new(checked.channel.clone(), checked.event, data)
    };
    let (published, answered) = state
        .hub
        .publish_answering(publication, answer)
        .await
        .map_err(api_error)?;
    Ok(answered.ok_or_else(|| answer_to(&checked.channel, &published)))
}

/// The answer to a publish the hub refused.
fn api_error(error: HubError) -> ApiError {
    match error {
        HubError::IdempotencyConflict { .. } => ApiError::idempotency_conflict(),
        other => ApiError::from(other),
    }
}

/// The status and JSON answer of a publish to `channel`: `201 Created`,
/// or `200` for a repeat of its idempotency key.
pub(crate) fn answer_to(channel: &ChannelName, published: &Published) -> (StatusCode, Bytes) {
    let mut answer = String::with_capacity(96);
    push_result(&mut answer, channel, published);
    (status_of(published), Bytes::from(answer))
}

/// The whole HTTP answer to a publish to `channel` on a connection that
/// stays open, head and body, as [`answer_to`] and the connection's
/// answer head make it, in one buffer: the body is written first (the head
/// gives its length), the head after it, and the two swapped in place.
/// `buffer` is cleared and reused.
pub(crate) fn whole_answer(
    mut buffer: Vec<u8>,
    channel: &ChannelName,
    published: &Published,
    allow_origin: Option<&AllowOrigin>,
) -> Vec<u8> {
    buffer.clear();
    buffer.reserve(512);
    // Empty, so always text.
    let mut body = String::from_utf8(buffer).unwrap_or_default();
    push_result(&mut body, channel, published);
    let mut answer = body.into_bytes();
    let length = answer.len();
    let head = socket::AnswerHead {
        status: status_of(published),
        length,
        cache_control: "",
        allow_origin,
        keep_alive: true,
        header: None,
    };
    head.push_to(&mut answer);
    answer.rotate_left(length);
    answer
}

/// `201 Created` for a publish, `200` for a repeat of its idempotency key.
fn status_of(published: &Published) -> StatusCode {
    if published.repeat {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}

/// Appends the JSON answer of one publish: `{"channel","id","subscribers"}`
/// and `"duplicate": true` for a repeat. Written by hand: this answer is on
/// the hottest path. Channel names and ids are JSON-safe by construction,
/// but are escaped anyway.
pub(crate) fn push_result(answer: &mut String, channel: &ChannelName, published: &Published) {
    answer.push_str("{\"channel\":");
    push_json_string(answer, channel.as_str());
    answer.push_str(",\"id\":");
    // The message's id: its cursor and its channel.
    let mut seq = itoa::Buffer::new();
    let id = [
        published.id.epoch.as_str(),
        "-",
        seq.format(published.id.seq.0),
        "/",
        channel.as_str(),
    ];
    push_json_pieces(answer, &id);
    answer.push_str(",\"subscribers\":");
    answer.push_str(itoa::Buffer::new().format(published.subscribers));
    if published.repeat {
        answer.push_str(",\"duplicate\":true");
    }
    answer.push('}');
}

/// Appends the concatenation of `pieces` as a JSON string, in place (no
/// string of its own) unless it needs escaping.
fn push_json_pieces(out: &mut String, pieces: &[&str]) {
    out.push('"');
    let start = out.len();
    for piece in pieces {
        out.push_str(piece);
    }
    if needs_no_escaping(&out[start..]) {
        out.push('"');
    } else {
        let text = out.split_off(start);
        out.pop();
        push_json_string(out, &text);
    }
}

fn push_json_string(out: &mut String, text: &str) {
    if needs_no_escaping(text) {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else {
        out.push_str(&serde_json::Value::from(text).to_string());
    }
}

/// True if `text` can stand between JSON quotes as it is.
fn needs_no_escaping(text: &str) -> bool {
    text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// The payload-too-large answer for a body over `limit` bytes.
pub(crate) fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the message body exceeds the limit of {limit} bytes"),
    )
}

pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || too_large(limit);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(error) => Err(ApiError::bad_request(
            "invalid_body",
            format!("the request body could not be read: {error}"),
        )),
    }
}
