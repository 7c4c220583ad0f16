//! `POST /pub`: a batch of messages, stored together, answered in order.
//!
//! The body is `{"messages": [{"channel", "event", "data",
//! "idempotency_key"}, …]}` (`event` and `idempotency_key` optional). A
//! string `data` is the data as it is; any other JSON value is stored as
//! its compact JSON text (numbers exactly as written).
//!
//! Steps, each refusing the whole batch with the first bad message's
//! `index`: the credentials are checked before the body is read (401, or
//! 403 when nothing may be published); the body is read within
//! `max_batch_bytes` and must be JSON (`Content-Type: application/json`,
//! 415 otherwise) with at most `max_batch_messages` messages (413); every
//! message is validated (400, or 413 for data over `max_body_bytes`) and
//! its channel authorized (403); then the hub stores them all in one step
//! (one commit with the durable store). A key reused for other content is
//! `409` with its index; nothing is stored unless everything is.

use std::net::IpAddr;

use axum::Extension;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use comet_auth::Refusal;
use comet_hub::Publication;
use comet_protocol::json::data_of_json_value;
use comet_protocol::{ChannelName, Data, EventType, IdempotencyKey};
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::AppState;
use crate::auth;
use crate::connection::PeerIp;
use crate::error::ApiError;
use crate::params::{Query, channel_name, publishable_event};
use crate::publish::{push_result, read_body, too_large};

pub(crate) async fn publish_batch(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    peer: Option<Extension<PeerIp>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let peer = peer.map(|Extension(PeerIp(ip))| ip);
    let query = Query::parse(query.as_deref())?;
    let token = auth::token(&headers, &query);
    authorize(&state, token, peer, &[])?;
    require_json(&headers)?;
    let config = &state.config;
    let reading = read_body(body, &headers, config.max_batch_bytes);
    let body = tokio::time::timeout(config.body_read_timeout, reading)
        .await
        .map_err(|_| crate::connection::body_timeout(config))??;
    let publications = parse(&body, config.max_batch_messages, config.max_body_bytes)?;
    let channels: Vec<ChannelName> = publications.iter().map(|p| p.channel.clone()).collect();
    authorize(&state, token, peer, &channels)?;
    let published = state.hub.publish_batch(publications).await?;
    let mut answer = String::with_capacity(16 + 96 * published.len());
    answer.push_str("{\"results\":[");
    for (index, (channel, published)) in channels.iter().zip(&published).enumerate() {
        if index > 0 {
            answer.push(',');
        }
        push_result(&mut answer, channel, published);
    }
    answer.push_str("]}");
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from(answer),
    )
        .into_response())
}

/// May this request publish to every one of `channels` (to anything at
/// all, when empty)? A refusal for a channel names the first message of
/// that channel.
fn authorize(
    state: &AppState,
    token: Option<&str>,
    peer: Option<IpAddr>,
    channels: &[ChannelName],
) -> Result<(), ApiError> {
    let refusal = match state.rules.current().publish(token, peer, channels) {
        Ok(_) => return Ok(()),
        Err(refusal) => refusal,
    };
    let index = match &refusal {
        Refusal::Forbidden {
            channel: Some(refused),
            ..
        } => channels.iter().position(|channel| channel == refused),
        _ => None,
    };
    let error = auth::refused(state, refusal, token.is_some());
    Err(match index {
        Some(index) => error.at(index),
        None => error,
    })
}

/// A batch must say it is JSON: a form or plain text posted here by
/// mistake gets a clear answer instead of a parse error.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "a batch publish (POST /pub) is JSON, sent with Content-Type: application/json \
             (got {content_type:?}); to publish one message as it is, POST /pub/{{channel}}"
        ),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody<'a> {
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem<'a> {
    channel: String,
    #[serde(default)]
    event: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// The batch's messages, every one validated, or the first one's error.
fn parse(
    body: &[u8],
    max_messages: usize,
    max_data_bytes: usize,
) -> Result<Vec<Publication>, ApiError> {
    let batch: BatchBody<'_> = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(
            "invalid_batch",
            format!("the body is not a batch {{\"messages\": [...]}}: {error}"),
        )
    })?;
    if batch.messages.len() > max_messages {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_messages",
            format!(
                "the batch holds {} messages; the limit is {max_messages}",
                batch.messages.len()
            ),
        ));
    }
    batch
        .messages
        .iter()
        .enumerate()
        .map(|(index, raw)| item(raw, max_data_bytes).map_err(|error| error.at(index)))
        .collect()
}

/// One message of a batch, validated.
fn item(raw: &RawValue, max_data_bytes: usize) -> Result<Publication, ApiError> {
    let item: BatchItem<'_> = serde_json::from_str(raw.get()).map_err(|error| {
        ApiError::bad_request(
            "invalid_batch",
            format!(
                "not a message {{\"channel\", \"data\", \"event\"?, \"idempotency_key\"?}}: {error}"
            ),
        )
    })?;
    let channel = channel_name(&item.channel)?;
    let event = match &item.event {
        Some(event) => publishable_event(event)?,
        None => EventType::message(),
    };
    let data = data_text(item.data)?;
    if data.len() > max_data_bytes {
        return Err(too_large(max_data_bytes));
    }
    let idempotency_key = item
        .idempotency_key
        .as_deref()
        .map(IdempotencyKey::new)
        .transpose()
        .map_err(|error| ApiError::bad_request("invalid_idempotency_key", error.to_string()))?;
    Ok(Publication {
        idempotency_key,
        ..Publication::new(channel, event, Data::from(data))
    })
}

/// A message's data: a JSON string's text, or any other value's compact
/// JSON text.
fn data_text(raw: &RawValue) -> Result<String, ApiError> {
    data_of_json_value(raw.get()).map_err(|error| {
        ApiError::bad_request(
            "invalid_data",
            format!("the data string is invalid: {error}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_of(item: &str) -> String {
        let raw: Box<RawValue> = serde_json::from_str(item).unwrap();
        data_text(&raw).unwrap()
    }

    #[test]
    fn strings_are_data_as_they_are_other_values_compact_json() {
        assert_eq!(data_of(r#""a \"b\"\nc""#), "a \"b\"\nc");
        assert_eq!(
            data_of(r#"{ "price" : 12345678901234567890.50, "tags": [ "a b", "c\"d" ] }"#),
            r#"{"price":12345678901234567890.50,"tags":["a b","c\"d"]}"#
        );
        assert_eq!(data_of("null"), "null");
        assert_eq!(data_of(" [ 1 , 2 ] "), "[1,2]");
    }

    #[test]
    fn every_message_is_validated_and_the_first_bad_one_named() {
        let parse_body = |body: &str| parse(body.as_bytes(), 3, 10);
        let good = parse_body(r#"{"messages":[{"channel":"a","data":"x"},{"channel":"b","event":"e","data":1,"idempotency_key":"k"}]}"#)
            .unwrap();
        assert_eq!(good.len(), 2);
        assert_eq!(good[1].event.as_str(), "e");
        assert_eq!(good[1].data.as_str(), "1");
        assert_eq!(good[1].idempotency_key.as_ref().unwrap().as_str(), "k");
        let cases = [
            (
                r#"{"messages":[{"channel":"a","data":"x"},{"channel":"a b","data":"x"}]}"#,
                "invalid_channel",
                Some(1),
            ),
            (
                r#"{"messages":[{"channel":"a","data":"x","event":"comet-gap"}]}"#,
                "reserved_event",
                Some(0),
            ),
            (
                r#"{"messages":[{"channel":"a"}]}"#,
                "invalid_batch",
                Some(0),
            ),
            (
                r#"{"messages":[{"channel":"a","data":"x","evnt":"typo"}]}"#,
                "invalid_batch",
                Some(0),
            ),
            (
                r#"{"messages":[{"channel":"a","data":"x","idempotency_key":""}]}"#,
                "invalid_idempotency_key",
                Some(0),
            ),
            (
                r#"{"messages":[{"channel":"a","data":"x"},{"channel":"a","data":"01234567890"}]}"#,
                "payload_too_large",
                Some(1),
            ),
            (r#"{"messages":[1,2,3,4]}"#, "too_many_messages", None),
            (r#"{"message":[]}"#, "invalid_batch", None),
            (r#"[{"channel":"a","data":"x"}]"#, "invalid_batch", None),
            ("not json", "invalid_batch", None),
        ];
        for (body, code, index) in cases {
            let error = parse_body(body)
                .err()
                .unwrap_or_else(|| panic!("accepted {body}"));
            assert_eq!(
                (error.code, error.index),
                (code, index),
                "{body}: {}",
                error.message
            );
        }
    }
}
