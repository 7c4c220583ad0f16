//! What the direct path makes of a request head: which of its routes it is
//! for, and the HTTP facts it needs (body length, keep-alive, the header
//! fields a handler reads). Pure: no I/O, no server state, so every rule
//! is tested here byte by byte.
//!
//! Anything unusual is left to the router, which answers it as it always
//! did: another route or method (a preflight is served only on the routes
//! above), HTTP/1.0, a chunked body, `Expect`, an
//! upgrade anywhere but `/ws/`, a percent-encoded or nested path, a repeated or non-decimal
//! `Content-Length`, a body on a `GET`, a header value `HeaderValue` would
//! refuse.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::transport::live::Framing;

/// The routes served on the direct path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// `GET /sse/{channels}` or `GET /stream/{channels}`.
    Stream(Framing),
    /// `GET /poll/{channels}`.
    Poll,
    /// `POST /pub/{channel}`.
    Publish,
    /// `GET /ws/{channels}`: a WebSocket handshake (judged by its handler,
    /// which answers a malformed one).
    WebSocket,
    /// `OPTIONS` on any of the paths above: a page's preflight, answered
    /// here for an origin the policy allows (the router answers the rest).
    Preflight,
}

/// A request the direct path serves.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) route: Route,
    /// The route's one path segment: the channel or channel list.
    pub(super) target: String,
    pub(super) query: Option<String>,
    /// The header fields; for a publish without `Origin`, only those that
    /// may carry a token and its idempotency key (building the whole map
    /// is most of a publish's own cost).
    pub(super) headers: HeaderMap,
    /// The body's length (only a publish has one).
    pub(super) body_length: usize,
    pub(super) keep_alive: bool,
}

impl Request {
    /// The request, if it is one for the direct path; `None` leaves it to
    /// the router.
    pub(super) fn parse(parsed: &httparse::Request<'_, '_>) -> Option<Self> {
        if parsed.version != Some(1) {
            return None;
        }
        let (route, rest) = route(parsed.method?, parsed.path?)?;
        let (target, query) = split_target(rest)?;
        // A publish needs its header fields only to judge an origin or
        // find a token: otherwise no map is built, and with a token only
        // the fields that may carry it are.
        let judges_an_origin = parsed
            .headers
            .iter()
            .any(|field| field.name.eq_ignore_ascii_case("origin"));
        let keep = if route != Route::Publish || judges_an_origin {
            Keep::All
        } else {
            Keep::Publishing
        };
        let fields = Fields::read(parsed.headers, keep, route == Route::WebSocket)?;
        if route != Route::Publish && fields.body_length > 0 {
            return None;
        }
        Some(Self {
            route,
            target: target.to_string(),
            query: query.map(str::to_string),
            headers: fields.headers,
            body_length: fields.body_length,
            keep_alive: fields.keep_alive,
        })
    }
}

/// The route of `method` and `path`, and the rest of the path after the
/// route's prefix.
fn route<'a>(method: &str, path: &'a str) -> Option<(Route, &'a str)> {
    match method {
        "GET" => {
            if let Some(rest) = path.strip_prefix("/sse/") {
                Some((Route::Stream(Framing::Sse), rest))
            } else if let Some(rest) = path.strip_prefix("/stream/") {
                Some((Route::Stream(Framing::Ndjson), rest))
            } else if let Some(rest) = path.strip_prefix("/ws/") {
                Some((Route::WebSocket, rest))
            } else {
                Some((Route::Poll, path.strip_prefix("/poll/")?))
            }
        }
        "POST" => Some((Route::Publish, path.strip_prefix("/pub/")?)),
        "OPTIONS" => {
            let rest = ["/sse/", "/stream/", "/ws/", "/poll/", "/pub/"]
                .iter()
                .find_map(|prefix| path.strip_prefix(prefix))?;
            Some((Route::Preflight, rest))
        }
        _ => None,
    }
}

/// The path segment and the query; `None` for an empty, nested or
/// percent-encoded segment (the router decodes those).
fn split_target(rest: &str) -> Option<(&str, Option<&str>)> {
    let (target, query) = match rest.split_once('?') {
        Some((target, query)) => (target, Some(query)),
        None => (rest, None),
    };
    if target.is_empty() || target.contains(['/', '%', '#']) {
        return None;
    }
    Some((target, query))
}

/// Which header fields go into the map.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    All,
    /// What a publish without `Origin` reads: `Authorization`, `Cookie`
    /// and `Idempotency-Key`.
    Publishing,
}

impl Keep {
    fn keeps(self, name: &str) -> bool {
        self == Keep::All
            || name.eq_ignore_ascii_case("authorization")
            || name.eq_ignore_ascii_case("cookie")
            || name.eq_ignore_ascii_case("idempotency-key")
    }
}

/// The header fields the direct path needs.
struct Fields {
    headers: HeaderMap,
    body_length: usize,
    keep_alive: bool,
}

impl Fields {
    /// Reads `fields`, keeping in a map those `keep` names; `None` for
    /// anything the router should judge (an `Upgrade` unless `upgrading`).
    fn read(fields: &[httparse::Header<'_>], keep: Keep, upgrading: bool) -> Option<Self> {
        let mut headers = if keep == Keep::All {
            HeaderMap::with_capacity(fields.len())
        } else {
            HeaderMap::new()
        };
        let mut body_length: Option<usize> = None;
        let mut keep_alive = true;
        for field in fields {
            let (name, value) = (field.name, field.value);
            let kept = keep.keeps(name);
            // Kept fields are validated as they are converted below.
            if !kept && !is_field_value(value) {
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
                || (name.eq_ignore_ascii_case("upgrade") && !upgrading)
                || name.eq_ignore_ascii_case("expect")
            {
                return None;
            } else if name.eq_ignore_ascii_case("connection") && asks_to_close(value) {
                keep_alive = false;
            }
            if kept {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).ok()?,
                    HeaderValue::from_bytes(value).ok()?,
                );
            }
        }
        Some(Self {
            headers,
            body_length: body_length.unwrap_or(0),
            keep_alive,
        })
    }
}

/// A `Connection` value with the `close` option.
fn asks_to_close(value: &[u8]) -> bool {
    std::str::from_utf8(value)
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
}

/// What `HeaderValue` accepts: visible ASCII, obs-text, space and tab.
fn is_field_value(value: &[u8]) -> bool {
    value.iter().all(|&b| (b >= 32 && b != 127) || b == b'\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `head` as the direct path would.
    fn check(head: &str) -> Option<Request> {
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut fields);
        let status = parsed.parse(head.as_bytes()).expect("a valid head");
        assert!(status.is_complete(), "a complete head: {head:?}");
        Request::parse(&parsed)
    }

    #[test]
    fn the_hot_routes_are_served_here() {
        let sse = check("GET /sse/news,sport?since=x HTTP/1.1\r\nhost: a\r\n\r\n").unwrap();
        assert_eq!(sse.route, Route::Stream(Framing::Sse));
        assert_eq!(sse.target, "news,sport");
        assert_eq!(sse.query.as_deref(), Some("since=x"));
        assert!(sse.keep_alive);
        let stream = check("GET /stream/a HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(stream.route, Route::Stream(Framing::Ndjson));
        let poll = check("GET /poll/a?wait=5 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(poll.route, Route::Poll);
        let publish = check("POST /pub/a HTTP/1.1\r\ncontent-length: 12\r\n\r\n").unwrap();
        assert_eq!(publish.route, Route::Publish);
        assert_eq!(publish.body_length, 12);
        let ws = check(
            "GET /ws/a,b?since=x HTTP/1.1\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: k\r\n\r\n",
        )
        .unwrap();
        assert_eq!(ws.route, Route::WebSocket);
        assert_eq!(
            (ws.target.as_str(), ws.query.as_deref()),
            ("a,b", Some("since=x"))
        );
        assert_eq!(ws.headers["sec-websocket-key"], "k");
        let preflight = check(
            "OPTIONS /pub/a HTTP/1.1\r\norigin: https://x\r\naccess-control-request-method: POST\r\n\r\n",
        )
        .unwrap();
        assert_eq!(preflight.route, Route::Preflight);
        assert_eq!(preflight.headers["origin"], "https://x");
        for path in ["/sse/a", "/stream/a", "/ws/a", "/poll/a"] {
            let head = format!("OPTIONS {path} HTTP/1.1\r\n\r\n");
            assert_eq!(check(&head).unwrap().route, Route::Preflight, "{path}");
        }
        // Without an upgrade too: its handler says what is missing.
        assert_eq!(
            check("GET /ws/a HTTP/1.1\r\n\r\n").unwrap().route,
            Route::WebSocket
        );
    }

    #[test]
    fn a_publish_without_an_origin_keeps_only_its_credentials_and_key() {
        let plain = check("POST /pub/a HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\n\r\n").unwrap();
        assert!(plain.headers.is_empty());
        let cross = check(
            "POST /pub/a HTTP/1.1\r\nhost: a\r\norigin: https://x\r\ncontent-length: 1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(cross.headers["origin"], "https://x");
        let authorized =
            check("POST /pub/a HTTP/1.1\r\nauthorization: Bearer k\r\ncontent-length: 1\r\n\r\n")
                .unwrap();
        assert_eq!(authorized.headers["authorization"], "Bearer k");
        let cookie = check("POST /pub/a HTTP/1.1\r\ncookie: comet_token=t\r\n\r\n").unwrap();
        assert_eq!(cookie.headers["cookie"], "comet_token=t");
        let keyed = check(
            "POST /pub/a HTTP/1.1\r\nx-other: 1\r\nidempotency-key: k-1\r\ncontent-length: 1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(keyed.headers.len(), 1);
        assert_eq!(keyed.headers["idempotency-key"], "k-1");
        let poll = check("GET /poll/a HTTP/1.1\r\nlast-event-id: e-1\r\n\r\n").unwrap();
        assert_eq!(poll.headers["last-event-id"], "e-1");
    }

    #[test]
    fn connection_close_ends_keep_alive() {
        for value in ["close", "Close", "keep-alive, close", " close "] {
            let head = format!("GET /poll/a HTTP/1.1\r\nconnection: {value}\r\n\r\n");
            assert!(!check(&head).unwrap().keep_alive, "{value}");
        }
        let head = "GET /poll/a HTTP/1.1\r\nconnection: keep-alive\r\n\r\n";
        assert!(check(head).unwrap().keep_alive);
    }

    #[test]
    fn anything_unusual_is_left_to_the_router() {
        for head in [
            "GET /poll/a HTTP/1.0\r\n\r\n",
            "GET /healthz HTTP/1.1\r\n\r\n",
            "GET /poll/ HTTP/1.1\r\n\r\n",
            "GET /poll/a/b HTTP/1.1\r\n\r\n",
            "GET /poll/%61 HTTP/1.1\r\n\r\n",
            "DELETE /pub/a HTTP/1.1\r\n\r\n",
            "PUT /pub/a HTTP/1.1\r\n\r\n",
            "POST /pub/a HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST /pub/a HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n",
            "POST /pub/a HTTP/1.1\r\ncontent-length: +1\r\n\r\n",
            "POST /pub/a HTTP/1.1\r\ncontent-length: \r\n\r\n",
            "POST /pub/a HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            "GET /sse/a HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            "GET /ws/a HTTP/1.0\r\nupgrade: websocket\r\n\r\n",
            "GET /ws/%61 HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            "POST /ws/a HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            "GET /poll/a HTTP/1.1\r\ncontent-length: 3\r\n\r\n",
            "OPTIONS /healthz HTTP/1.1\r\n\r\n",
            "OPTIONS /pub/a HTTP/1.1\r\ncontent-length: 1\r\n\r\n",
        ] {
            assert!(check(head).is_none(), "{head:?}");
        }
    }
}
