//! Turning a subscription request's path, query and headers into types.
//!
//! Rules (API.md, "Subscribing"): the path names one channel or a
//! comma-separated list; the resume point is, first found wins, the
//! `Last-Event-ID` header, the `lastEventId` parameter, the `since`
//! parameter; without one, `backlog=N` asks for the newest N messages of
//! each channel; `wait=SECONDS` makes a poll a long poll. The same rules
//! apply on every transport. Unknown parameters are ignored (cache busters
//! are common); a known parameter given twice is an error, since which one
//! was meant cannot be known.

use std::time::Duration;

use comet_hub::Start;
use comet_protocol::{ChannelList, ChannelName, Cursor, EventType, InvalidChannelList};
use http::HeaderMap;

use crate::config::ServerConfig;
use crate::error::ApiError;

const KNOWN: &[&str] = &[
    "since",
    "lastEventId",
    "backlog",
    "wait",
    "event",
    "after",
    "limit",
    "heartbeat",
    "token",
];

/// A request's query parameters that Comet knows, each at most once.
#[derive(Debug, Default)]
pub(crate) struct Query {
    values: Vec<(&'static str, String)>,
}

impl Query {
    pub(crate) fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut query = Query::default();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let Some(known) = KNOWN.iter().find(|k| **k == key) else {
                continue;
            };
            if query.get(known).is_some() {
                return Err(ApiError::bad_request(
                    "duplicate_parameter",
                    format!("the query parameter {known:?} is given more than once"),
                ));
            }
            query.values.push((known, value.into_owned()));
        }
        Ok(query)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Validates the channel of a publish or an inspection.
pub(crate) fn channel_name(raw: &str) -> Result<ChannelName, ApiError> {
    ChannelName::new(raw).map_err(|reason| {
        ApiError::bad_request("invalid_channel", format!("invalid channel name: {reason}"))
    })
}

/// Validates the optional `event` parameter of a publish.
pub(crate) fn event_type(query: &Query) -> Result<EventType, ApiError> {
    match query.get("event") {
        Some(raw) => publishable_event(raw),
        None => Ok(EventType::message()),
    }
}

/// Validates an event type a publisher gives.
pub(crate) fn publishable_event(raw: &str) -> Result<EventType, ApiError> {
    let event = EventType::new(raw).map_err(|reason| {
        ApiError::bad_request("invalid_event", format!("invalid event type: {reason}"))
    })?;
    if event.is_reserved() {
        return Err(ApiError::bad_request(
            "reserved_event",
            format!(
                "event types starting with {:?} are reserved for Comet's own signals, \
                 and {} for the browser's (EventSource would take such a message for \
                 its own connection event)",
                comet_protocol::RESERVED_EVENT_PREFIX,
                comet_protocol::BROWSER_EVENT_TYPES.join(" and "),
            ),
        ));
    }
    Ok(event)
}

/// A validated subscription request.
#[derive(Debug)]
pub(crate) struct Subscribe {
    pub(crate) channels: ChannelList,
    pub(crate) start: Start,
    /// The resume cursor the client gave, if any, as it gave it (a poll
    /// that finds nothing answers with the very same text).
    pub(crate) resume: Option<(Cursor, String)>,
    /// For polls: how long to hold the request (zero: answer at once).
    pub(crate) wait: Duration,
    /// For SSE: heartbeats as events (`heartbeat=event`), which page code
    /// can see, instead of comments.
    pub(crate) heartbeat_events: bool,
}

impl Subscribe {
    pub(crate) fn parse(
        channels: &str,
        query: &Query,
        headers: &HeaderMap,
        config: &ServerConfig,
    ) -> Result<Self, ApiError> {
        let channels = ChannelList::parse(channels, config.max_channels_per_subscription).map_err(
            |error| match error {
                InvalidChannelList::TooMany { .. } => {
                    ApiError::bad_request("too_many_channels", error.to_string())
                }
                InvalidChannelList::Channel { .. } => {
                    ApiError::bad_request("invalid_channel", error.to_string())
                }
            },
        )?;
        let resume = resume_point(query, headers)?;
        let backlog = match query.get("backlog") {
            None => None,
            Some(raw) => Some(raw.parse::<usize>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_backlog",
                    format!("backlog must be a whole number of messages, not {raw:?}"),
                )
            })?),
        };
        let wait = match query.get("wait") {
            None => Duration::ZERO,
            Some(raw) => parse_wait(raw)?.min(config.max_wait),
        };
        let heartbeat_events = match query.get("heartbeat") {
            None | Some("comment") => false,
            Some("event") => true,
            Some(other) => {
                return Err(ApiError::bad_request(
                    "invalid_heartbeat",
                    format!("heartbeat must be \"comment\" or \"event\", not {other:?}"),
                ));
            }
        };
        let start = match (&resume, backlog) {
            (Some((cursor, _)), _) => Start::Since(cursor.clone()),
            (None, Some(count)) => Start::Backlog(count.min(config.max_backlog)),
            (None, None) => Start::Now,
        };
        Ok(Self {
            channels,
            start,
            resume,
            wait,
            heartbeat_events,
        })
    }
}

fn resume_point(query: &Query, headers: &HeaderMap) -> Result<Option<(Cursor, String)>, ApiError> {
    let header = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::bad_request(
                "invalid_cursor",
                "the Last-Event-ID header is not printable ASCII",
            )
        })?),
    };
    // An empty value counts as absent, as EventSource treats an empty id.
    let chosen = [
        ("the Last-Event-ID header", header),
        ("lastEventId", query.get("lastEventId")),
        ("since", query.get("since")),
    ]
    .into_iter()
    .find_map(|(source, value)| value.filter(|v| !v.is_empty()).map(|v| (source, v)));
    match chosen {
        None => Ok(None),
        Some((source, text)) => {
            let text = text.trim();
            match Cursor::parse(text) {
                Ok(cursor) => Ok(Some((cursor, text.to_string()))),
                Err(error) => Err(ApiError::bad_request(
                    "invalid_cursor",
                    format!("{source}: {error}"),
                )),
            }
        }
    }
}

fn parse_wait(raw: &str) -> Result<Duration, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_wait",
            format!("wait must be a number of seconds, 0 or more, not {raw:?}"),
        )
    };
    let simple = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !simple {
        return Err(invalid());
    }
    let seconds: f64 = raw.parse().map_err(|_| invalid())?;
    if !seconds.is_finite() {
        return Err(invalid());
    }
    // Anything beyond a day is capped later anyway; avoid overflow here.
    Ok(Duration::from_secs_f64(seconds.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscribe(
        channels: &str,
        query: &str,
        last_event_id: Option<&str>,
    ) -> Result<Subscribe, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(id) = last_event_id {
            headers.insert("last-event-id", id.parse().unwrap());
        }
        let query = Query::parse(Some(query))?;
        Subscribe::parse(channels, &query, &headers, &ServerConfig::default())
    }

    #[test]
    fn resume_point_precedence() {
        let s = subscribe("a", "since=e-1&lastEventId=e-2", Some("e-3")).unwrap();
        assert_eq!(s.resume.unwrap().1, "e-3");
        let s = subscribe("a", "since=e-1&lastEventId=e-2", None).unwrap();
        assert_eq!(s.resume.unwrap().1, "e-2");
        let s = subscribe("a", "since=e-1", Some("")).unwrap();
        assert_eq!(s.resume.unwrap().1, "e-1");
        let s = subscribe("a", "backlog=5", None).unwrap();
        assert_eq!(s.start, Start::Backlog(5));
    }

    #[test]
    fn wait_is_capped_and_validated() {
        assert_eq!(
            subscribe("a", "wait=2.5", None).unwrap().wait,
            Duration::from_millis(2500)
        );
        assert_eq!(
            subscribe("a", "wait=999", None).unwrap().wait,
            Duration::from_secs(60)
        );
        for bad in ["-1", "abc", "", "1e3", "inf", "NaN", "1..2"] {
            let error = subscribe("a", &format!("wait={bad}"), None).unwrap_err();
            assert_eq!(error.code, "invalid_wait", "{bad:?}");
        }
    }

    #[test]
    fn duplicates_and_bad_values_are_refused() {
        assert_eq!(
            subscribe("a", "since=e-1&since=e-2", None)
                .unwrap_err()
                .code,
            "duplicate_parameter"
        );
        assert_eq!(
            subscribe("a", "since=nope", None).unwrap_err().code,
            "invalid_cursor"
        );
        assert_eq!(
            subscribe("a", "backlog=-3", None).unwrap_err().code,
            "invalid_backlog"
        );
        assert_eq!(
            subscribe("a,,b", "", None).unwrap_err().code,
            "invalid_channel"
        );
        assert!(subscribe("a", "_=123&unknown=x", None).is_ok());
    }
}
