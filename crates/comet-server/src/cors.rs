//! Cross-origin requests: which web pages may use this server.
//!
//! Pages served by Comet itself (same origin: the `Origin` header names the
//! host the request was sent to) and clients that send no `Origin` (curl,
//! servers, the Rust client) are always served. A page from another origin
//! is served only when its origin is allowed (`--cors-origin`, or `*` for
//! any): its answers then carry `Access-Control-Allow-Origin`, and its
//! preflight requests (`OPTIONS`) are answered, `Authorization` included.
//! Any other origin gets `403 origin_not_allowed`, which also keeps a
//! foreign page from publishing with a plain form post.
//!
//! Origins listed by name may also send credentials (the `comet_token`
//! cookie, with `EventSource`'s `withCredentials` or fetch's
//! `credentials: 'include'`): their answers carry
//! `Access-Control-Allow-Credentials`. With `*` they may not: any site could
//! then read a visitor's private channels with the visitor's cookie.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::AppState;
use crate::error::ApiError;

/// What a preflight allows: the methods, the request header fields, and
/// how long (seconds) a browser may keep the answer.
const ALLOW_METHODS: &str = "GET, POST";
const ALLOW_HEADERS: &str =
    "content-type, last-event-id, cache-control, authorization, idempotency-key";
const PREFLIGHT_MAX_AGE: &str = "600";

/// The head of the answer to an allowed origin's preflight, written by hand
/// for the direct path: the same fields the middleware below answers with.
pub(crate) fn preflight_head(allow_origin: &AllowOrigin, keep_alive: bool) -> Vec<u8> {
    let mut head = Vec::with_capacity(384);
    head.extend_from_slice(b"HTTP/1.1 204 No Content\r\n");
    allow_origin.write_lines(&mut head);
    for (name, value) in [
        ("access-control-allow-methods", ALLOW_METHODS),
        ("access-control-allow-headers", ALLOW_HEADERS),
        ("access-control-max-age", PREFLIGHT_MAX_AGE),
    ] {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"date: ");
    crate::transport::socket::http_date(|date| head.extend_from_slice(date.as_bytes()));
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// Which other origins may use the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CorsPolicy {
    /// Only the same origin (the default).
    #[default]
    SameOrigin,
    /// The same origin and these, exactly as browsers send them
    /// (`https://app.example.com`, `http://localhost:3000`).
    Origins(Vec<String>),
    /// Any origin.
    Any,
}

impl CorsPolicy {
    /// Whether `origin` is allowed, and with credentials.
    fn allows(&self, origin: &str) -> Option<bool> {
        match self {
            CorsPolicy::SameOrigin => None,
            CorsPolicy::Origins(origins) => origins
                .iter()
                .any(|allowed| allowed == origin)
                .then_some(true),
            CorsPolicy::Any => Some(false),
        }
    }
}

/// What an allowed foreign origin's answers carry.
#[derive(Clone, Debug)]
pub(crate) struct AllowOrigin {
    /// `Access-Control-Allow-Origin`.
    pub(crate) origin: HeaderValue,
    /// `Access-Control-Allow-Credentials: true`.
    pub(crate) credentials: bool,
}

impl AllowOrigin {
    /// The header lines, for answers written by hand.
    pub(crate) fn write_lines(&self, head: &mut Vec<u8>) {
        head.extend_from_slice(b"access-control-allow-origin: ");
        head.extend_from_slice(self.origin.as_bytes());
        if self.credentials {
            head.extend_from_slice(b"\r\naccess-control-allow-credentials: true");
        }
        head.extend_from_slice(b"\r\nvary: origin\r\n");
    }

    fn insert(self, headers: &mut HeaderMap) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, self.origin);
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// True when `origin` is the host the request was addressed to.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let authority = origin
        .split_once("://")
        .map_or(origin, |(_, authority)| authority);
    headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .is_some_and(|host| host.eq_ignore_ascii_case(authority))
}

/// What the policy says of one request.
pub(crate) enum Verdict {
    /// No `Origin`, or the same origin: served as is.
    Plain,
    /// An allowed foreign origin: served, with these headers.
    Allowed(AllowOrigin),
    /// A foreign origin the policy does not allow.
    Refused(String),
}

/// Applies `policy` to a request with `headers`.
pub(crate) fn judge(policy: &CorsPolicy, headers: &HeaderMap) -> Verdict {
    let Some(origin) = headers
        .get(header::ORIGIN)
        .and_then(|origin| origin.to_str().ok())
    else {
        return Verdict::Plain;
    };
    if same_origin(origin, headers) {
        return Verdict::Plain;
    }
    let Some(credentials) = policy.allows(origin) else {
        return Verdict::Refused(origin.to_string());
    };
    Verdict::Allowed(AllowOrigin {
        origin: HeaderValue::from_str(origin).unwrap_or(HeaderValue::from_static("null")),
        credentials,
    })
}

/// The middleware applying the policy.
pub(crate) async fn cors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let allow_origin = match judge(&state.rules.cors(), request.headers()) {
        Verdict::Plain => return next.run(request).await,
        Verdict::Refused(origin) => {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                format!("pages from {origin} may not use this server (see --cors-origin)"),
            )
            .into_response();
        }
        Verdict::Allowed(allow_origin) => allow_origin,
    };
    if request.method() == Method::OPTIONS {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        allow_origin.insert(headers);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        );
        headers.insert(header::VARY, HeaderValue::from_static("origin"));
        return response;
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    allow_origin.insert(headers);
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    response
}
