//! Publishing: one message (`POST /pub/{channel}`) or a batch
//! (`POST /pub`), retried when its outcome could not be learned.
//!
//! A publish that timed out, whose connection dropped, or that the server
//! answered with a transient status (408, 429, 500, 502, 503, 504) may or
//! may not have been stored. It is sent again, with the same
//! `Idempotency-Key`: the server stores it once and answers a repeat with
//! the original's id (`duplicate: true`). So that the first attempt
//! already carries it, every publish gets a key of its own unless the
//! caller gives one (for a batch, every message that has none), as long as
//! retries are on ([`Client::with_publish_retries`]).

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Client, Error, status_error};

/// Retries of a publish whose outcome could not be learned, unless set
/// otherwise ([`Client::with_publish_retries`]).
pub const DEFAULT_PUBLISH_RETRIES: u32 = 3;

/// The wait before the first retry, unless set otherwise
/// ([`Client::with_publish_retry_delay`]); doubled before each next one.
pub const DEFAULT_PUBLISH_RETRY_DELAY: Duration = Duration::from_millis(200);

/// The server's answer to a publish.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Published {
    /// The channel.
    pub channel: String,
    /// The message's id, usable as a cursor.
    pub id: String,
    /// Subscribers connected to that server for the channel.
    pub subscribers: u64,
    /// True when the server had already stored this message under its
    /// idempotency key (a retry whose first attempt was stored): the id is
    /// the original's, and nothing new was stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// One message of a batch ([`Client::publish_batch`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Publication {
    /// The channel.
    pub channel: String,
    /// The event type (default: `message`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The data, as it is.
    pub data: String,
    /// The idempotency key; one is made when retries are on and none is
    /// given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl Publication {
    /// `data` for `channel`, with the default event type and no key.
    pub fn new(channel: impl Into<String>, data: impl Into<String>) -> Self {
        Self {
            channel: channel.into(),
            event: None,
            data: data.into(),
            idempotency_key: None,
        }
    }

    /// The same message with an event type.
    pub fn with_event(mut self, event: impl Into<String>) -> Self {
        self.event = Some(event.into());
        self
    }

    /// The same message with an idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// A fresh idempotency key: 128 random bits.
pub fn new_idempotency_key() -> String {
    format!("comet-{:032x}", rand::random::<u128>())
}

#[derive(Serialize)]
struct BatchBody<'a> {
    messages: &'a [Publication],
}

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<Published>,
}

impl Client {
    /// Publishes `data` to `channel`, with an event type and an idempotency
    /// key if given (one is made when retries are on and none is given).
    pub async fn publish_with_key(
        &self,
        channel: &str,
        event: Option<&str>,
        data: impl Into<Bytes>,
        idempotency_key: Option<&str>,
    ) -> Result<Published, Error> {
        let name =
            comet_protocol::ChannelName::new(channel).map_err(|error| Error::InvalidChannel {
                name: channel.to_string(),
                reason: error.to_string(),
            })?;
        let mut url = self.url(&format!("pub/{name}"))?;
        if let Some(event) = event {
            url.query_pairs_mut().append_pair("event", event);
        }
        let key = self.key_for(idempotency_key.map(str::to_string));
        let data = data.into();
        self.with_retries(|| {
            let mut request = self
                .authorized(self.http.post(url.clone()))
                .body(data.clone());
            if let Some(key) = &key {
                request = request.header("idempotency-key", key);
            }
            async move {
                let response = request.send().await?;
                if !matches!(response.status().as_u16(), 200 | 201) {
                    return Err(status_error(response).await);
                }
                response
                    .json::<Published>()
                    .await
                    .map_err(|error| Error::Protocol(format!("the publish answer: {error}")))
            }
        })
        .await
    }

    /// Publishes `messages` together (`POST /pub`): all are stored, in
    /// order, or none (an invalid message fails the whole batch, the
    /// error naming it). The answers come in the same order.
    pub async fn publish_batch(&self, messages: &[Publication]) -> Result<Vec<Published>, Error> {
        let url = self.url("pub")?;
        let keyed: Vec<Publication>;
        let messages = if self.publish_retries > 0 {
            keyed = messages
                .iter()
                .cloned()
                .map(|mut message| {
                    message.idempotency_key = self.key_for(message.idempotency_key);
                    message
                })
                .collect();
            &keyed[..]
        } else {
            messages
        };
        let body = Bytes::from(
            serde_json::to_vec(&BatchBody { messages })
                .map_err(|error| Error::Protocol(format!("encoding the batch: {error}")))?,
        );
        let count = messages.len();
        self.with_retries(|| {
            let request = self
                .authorized(self.http.post(url.clone()))
                .header("content-type", "application/json")
                .body(body.clone());
            async move {
                let response = request.send().await?;
                if response.status() != reqwest::StatusCode::CREATED {
                    return Err(status_error(response).await);
                }
                let answer = response
                    .json::<BatchAnswer>()
                    .await
                    .map_err(|error| Error::Protocol(format!("the batch answer: {error}")))?;
                if answer.results.len() != count {
                    return Err(Error::Protocol(format!(
                        "the batch answer has {} results for {count} messages",
                        answer.results.len()
                    )));
                }
                Ok(answer.results)
            }
        })
        .await
    }

    /// The key to send: the one given, or, with retries on, a new one.
    fn key_for(&self, given: Option<String>) -> Option<String> {
        given.or_else(|| (self.publish_retries > 0).then(new_idempotency_key))
    }

    /// Runs `attempt` (each within the publish timeout) until it succeeds,
    /// fails in a way a retry cannot fix, or the retries are spent.
    async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let mut retries = 0;
        loop {
            let outcome = tokio::time::timeout(self.publish_timeout, attempt())
                .await
                .unwrap_or(Err(Error::Timeout(self.publish_timeout)));
            match outcome {
                Err(error) if retries < self.publish_retries && outcome_unknown(&error) => {
                    let delay = self.publish_retry_delay.saturating_mul(1 << retries.min(8));
                    tracing::debug!(%error, retry = retries + 1, ?delay, "publishing again");
                    tokio::time::sleep(delay).await;
                    retries += 1;
                }
                outcome => return outcome,
            }
        }
    }
}

/// True for a failure after which the publish may or may not be stored,
/// and that a later attempt may get past.
fn outcome_unknown(error: &Error) -> bool {
    match error {
        Error::Http(_) | Error::Timeout(_) => true,
        Error::Status { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
        _ => false,
    }
}
