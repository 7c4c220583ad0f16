//! The direct path: HTTP/1.1 for the hot routes, without hyper or the
//! router.
//!
//! Publishing, polling and opening streams are nearly all a push server
//! does, and through hyper and the router each request pays for generic
//! machinery (buffers, a boxed service call, header maps built twice). So
//! each connection starts here: request heads are read by `head`, and a
//! plain `POST /pub/{channel}`, `GET /poll/{channels}`, `GET /sse/{channels}`
//! or `GET /stream/{channels}` is answered directly, calling the same
//! functions the router's handlers call, on a keep-alive loop. Streams
//! continue in `crate::transport::socket`; a long poll that has to wait
//! parks with its socket (`super::parked`).
//!
//! The first request that is anything else (another route or method,
//! HTTP/1.0, a chunked or oversized body, `Expect`, an upgrade, a
//! percent-encoded path, a foreign origin the policy refuses) hands the
//! connection, with everything read and not yet answered, to hyper for the
//! rest of its life; the router answers it exactly as it always did. A
//! stream whose subscription is refused is handed over the same way, so the
//! router answers the error. Errors of polls and publishes are answered
//! here, as JSON, and the connection stays open.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::head;
use super::parked::{self, PollRequest, Polled};
use crate::AppState;
use crate::cors::{self, Verdict};
use crate::error::ApiError;
use crate::publish;
use crate::transport::live::{Framing, Live};
use crate::transport::socket;

/// What became of a connection.
pub(crate) enum Outcome {
    /// Served to its end; nothing is left to do.
    Done,
    /// A stream, opened and ready to be written to the end with
    /// `transport::socket::stream_to` (the connection answers nothing else).
    Stream(TcpStream, Live, Vec<u8>),
    /// A request head that is too slow, too large or not HTTP: answer this
    /// error and close.
    Refused(TcpStream, ApiError),
    /// A request for the router: the connection and what was read of it,
    /// starting with that request's head.
    Router(TcpStream, BytesMut),
}

/// The routes served here.
enum Route {
    Stream(Framing),
    Poll,
    Publish { length: usize },
}

/// A request served here.
struct Request {
    route: Route,
    /// The route's one path segment: the channel or channel list.
    target: String,
    query: Option<String>,
    headers: HeaderMap,
    allow_origin: Option<HeaderValue>,
    keep_alive: bool,
}

/// Serves `stream` until it closes or needs the router.
pub(crate) async fn serve(mut stream: TcpStream, state: &AppState) -> Outcome {
    let config = &state.config;
    let mut buffer = BytesMut::new();
    loop {
        if buffer.is_empty() && buffer.capacity() > 0 {
            // Nothing of the next request yet: hold no buffer while idle.
            buffer = BytesMut::new();
        }
        let reading = head::read(
            &mut stream,
            &mut buffer,
            config.header_read_timeout,
            config.max_head_bytes,
            |parsed, length| (length, Request::from_parsed(parsed, state)),
        );
        let read = tokio::select! {
            read = reading => read,
            () = state.shutdown.cancelled() => return Outcome::Done,
        };
        let (head_length, request) = match read {
            Ok(Ok(head)) => head,
            Ok(Err(why)) => {
                state.metrics.closed(why.into());
                return Outcome::Done;
            }
            Err(error) => {
                let (refusal, api_error) = error.answer(config);
                state.metrics.refused(refusal);
                return Outcome::Refused(stream, api_error);
            }
        };
        let Some(request) = request else {
            return Outcome::Router(stream, buffer);
        };
        let (status, body, cache_control) = match request.route {
            Route::Stream(framing) => {
                let opened = Box::pin(Live::open(
                    state.clone(),
                    &request.target,
                    request.query.as_deref(),
                    &request.headers,
                    framing,
                ))
                .await;
                let Ok(live) = opened else {
                    return Outcome::Router(stream, buffer);
                };
                let response_head = socket::response_head(framing, request.allow_origin.as_ref());
                return Outcome::Stream(stream, live, response_head);
            }
            Route::Poll => {
                buffer.advance(head_length);
                let polling = Box::pin(parked::poll(
                    state,
                    PollRequest {
                        target: &request.target,
                        query: request.query.as_deref(),
                        headers: &request.headers,
                        allow_origin: request.allow_origin.as_ref(),
                        keep_alive: request.keep_alive,
                    },
                    stream,
                ));
                let (returned, polled) = polling.await;
                stream = returned;
                match polled {
                    Polled::Answer(answer) => (StatusCode::OK, answer, socket::NO_STORE),
                    Polled::Failed => return Outcome::Done,
                    Polled::Sent { unsent } => {
                        let sent =
                            socket::send(&stream, &[], &[unsent], b"", config.write_timeout, state)
                                .await;
                        if sent.is_err() || !request.keep_alive || state.shutdown.is_cancelled() {
                            return Outcome::Done;
                        }
                        continue;
                    }
                }
            }
            Route::Publish { length } => {
                if length > config.max_body_bytes {
                    // The router answers 413 before reading the body.
                    return Outcome::Router(stream, buffer);
                }
                let whole = head_length + length;
                match read_to(&mut stream, &mut buffer, whole, config.body_read_timeout).await {
                    BodyRead::Complete => {}
                    BodyRead::Closed => return Outcome::Done,
                    BodyRead::TimedOut => {
                        return Outcome::Refused(stream, body_timeout(config));
                    }
                }
                buffer.advance(head_length);
                // A copy of its own: a slice of the read buffer would keep
                // the whole buffer alive for as long as the message is
                // retained.
                let body = Bytes::copy_from_slice(&buffer[..length]);
                buffer.advance(length);
                let answer = Box::pin(publish::answer(
                    state,
                    &request.target,
                    request.query.as_deref(),
                    body,
                ))
                .await;
                (StatusCode::CREATED, answer, "")
            }
        };
        let keep_alive = request.keep_alive && !state.shutdown.is_cancelled();
        let (status, body) = match body {
            Ok(body) => (status, body),
            Err(error) => (error.status, error.body()),
        };
        let head = socket::answer_head(
            status,
            body.len(),
            cache_control,
            request.allow_origin.as_ref(),
            keep_alive,
        );
        let sent = socket::send(
            &stream,
            &[head.as_bytes()],
            &[body],
            b"",
            config.write_timeout,
            state,
        )
        .await;
        if sent.is_err() || !keep_alive {
            return Outcome::Done;
        }
    }
}

impl Request {
    /// The request if it is one for this path; `None` leaves it to the
    /// router.
    fn from_parsed(parsed: &httparse::Request<'_, '_>, state: &AppState) -> Option<Self> {
        if parsed.version != Some(1) {
            return None;
        }
        let path = parsed.path?;
        let (mut route, rest) = match parsed.method? {
            "GET" => {
                if let Some(rest) = path.strip_prefix("/sse/") {
                    (Route::Stream(Framing::Sse), rest)
                } else if let Some(rest) = path.strip_prefix("/stream/") {
                    (Route::Stream(Framing::Ndjson), rest)
                } else {
                    (Route::Poll, path.strip_prefix("/poll/")?)
                }
            }
            "POST" => (Route::Publish { length: 0 }, path.strip_prefix("/pub/")?),
            _ => return None,
        };
        let (target, query) = match rest.split_once('?') {
            Some((target, query)) => (target, Some(query.to_string())),
            None => (rest, None),
        };
        if target.is_empty() || target.contains(['/', '%', '#']) {
            return None;
        }
        // A publish needs its header fields only to judge an origin: without
        // one, no header map is built (allocations are most of a publish's
        // own cost).
        let keep_headers = !matches!(route, Route::Publish { .. })
            || parsed
                .headers
                .iter()
                .any(|field| field.name.eq_ignore_ascii_case("origin"));
        let mut headers = if keep_headers {
            HeaderMap::with_capacity(parsed.headers.len())
        } else {
            HeaderMap::new()
        };
        let mut body_length: Option<usize> = None;
        let mut keep_alive = true;
        for field in parsed.headers.iter() {
            let (name, value) = (field.name, field.value);
            // Kept fields are validated as they are converted below.
            if !keep_headers && !is_field_value(value) {
                return None;
            }
            if name.eq_ignore_ascii_case("content-length") {
                // Exactly one plain decimal length, or the router decides.
                if body_length.is_some()
                    || value.is_empty()
                    || !value.iter().all(u8::is_ascii_digit)
                {
                    return None;
                }
                body_length = Some(std::str::from_utf8(value).ok()?.parse::<usize>().ok()?);
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("upgrade")
                || name.eq_ignore_ascii_case("expect")
            {
                return None;
            } else if name.eq_ignore_ascii_case("connection")
                && std::str::from_utf8(value)
                    .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
            {
                keep_alive = false;
            }
            if keep_headers {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).ok()?,
                    HeaderValue::from_bytes(value).ok()?,
                );
            }
        }
        let body_length = body_length.unwrap_or(0);
        match &mut route {
            Route::Publish { length } => *length = body_length,
            _ if body_length > 0 => return None,
            _ => {}
        }
        let allow_origin = match cors::judge(&state.config.cors, &headers) {
            Verdict::Plain => None,
            Verdict::Allowed(origin) => Some(origin),
            Verdict::Refused(_) => return None,
        };
        Some(Self {
            route,
            target: target.to_string(),
            query,
            headers,
            allow_origin,
            keep_alive,
        })
    }
}

/// What `HeaderValue` accepts: visible ASCII, obs-text, space and tab.
fn is_field_value(value: &[u8]) -> bool {
    value.iter().all(|&b| (b >= 32 && b != 127) || b == b'\t')
}

/// How reading a request body ended.
enum BodyRead {
    Complete,
    Closed,
    TimedOut,
}

/// Reads until `buffer` holds `length` bytes, within `limit` in all: a
/// client that trickles its body cannot hold the connection longer.
async fn read_to(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
    length: usize,
    limit: Duration,
) -> BodyRead {
    let reading = async {
        while buffer.len() < length {
            buffer.reserve(length - buffer.len());
            match stream.read_buf(buffer).await {
                Ok(read) if read > 0 => {}
                _ => return BodyRead::Closed,
            }
        }
        BodyRead::Complete
    };
    tokio::time::timeout(limit, reading)
        .await
        .unwrap_or(BodyRead::TimedOut)
}

/// The answer to a body that did not arrive in time.
pub(crate) fn body_timeout(config: &crate::ServerConfig) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "the request body did not arrive within {} ms",
            config.body_read_timeout.as_millis()
        ),
    )
}
