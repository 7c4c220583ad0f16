//! Authorization on every route: finding the token a request carries, and
//! turning a refusal into its answer (401 with `WWW-Authenticate`, or
//! 403), counted by reason and logged at debug level without the token.
//!
//! The token is, first found: the `Authorization: Bearer` header, the
//! `comet_token` cookie, the `token` query parameter (for the browser's
//! `EventSource` and WebSocket, which cannot send headers). The decisions
//! are `comet_auth`'s; the rules in force can be replaced while the server
//! runs ([`Rules`]): they apply to requests from then on, and open streams
//! are judged again (`transport::grant`).

use std::sync::{Arc, RwLock};

use comet_auth::{Authorizer, Refusal};
use http::{HeaderMap, StatusCode, header};
use tokio::sync::watch;

use crate::AppState;
use crate::cors::CorsPolicy;
use crate::error::ApiError;
use crate::params::Query;

/// Who may use the server, as it runs: the authorization rules and the
/// origins whose pages are served, shared with whoever may replace them
/// (a configuration reload). Requests already answered stand; an open
/// stream the new authorization rules no longer allow ends.
#[derive(Clone)]
pub struct Rules {
    auth: Arc<RwLock<Arc<Authorizer>>>,
    cors: Arc<RwLock<Arc<CorsPolicy>>>,
    /// Told each time the authorization rules are replaced.
    changes: Arc<watch::Sender<()>>,
}

impl Rules {
    /// Rules starting as `authorizer` (the origins come from the server's
    /// configuration when it starts).
    pub fn new(authorizer: Authorizer) -> Self {
        Self {
            auth: Arc::new(RwLock::new(Arc::new(authorizer))),
            cors: Arc::new(RwLock::new(Arc::new(CorsPolicy::default()))),
            changes: Arc::new(watch::channel(()).0),
        }
    }

    /// The authorization rules now.
    pub fn current(&self) -> Arc<Authorizer> {
        self.auth.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the authorization rules for every request from now on.
    pub fn replace(&self, authorizer: Authorizer) {
        *self.auth.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(authorizer);
        self.changes.send_replace(());
    }

    /// Resolves, through `changed`, each time the authorization rules are
    /// replaced.
    pub(crate) fn changes(&self) -> watch::Receiver<()> {
        self.changes.subscribe()
    }

    /// The origins served now.
    pub fn cors(&self) -> Arc<CorsPolicy> {
        self.cors.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the origins served, for every request from now on.
    pub fn replace_cors(&self, policy: CorsPolicy) {
        *self.cors.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
    }
}

impl Default for Rules {
    fn default() -> Self {
        Self::new(Authorizer::default())
    }
}

/// The cookie a browser can carry a token in.
pub const TOKEN_COOKIE: &str = "comet_token";

/// The request's token, first found: header, cookie, query.
pub(crate) fn token<'a>(headers: &'a HeaderMap, query: &'a Query) -> Option<&'a str> {
    bearer(headers)
        .or_else(|| cookie(headers))
        .or_else(|| query.get("token").filter(|token| !token.is_empty()))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == TOKEN_COOKIE && !value.is_empty()).then_some(value)
        })
}

/// The answer to `refusal`, counted and logged (never with the token).
pub(crate) fn refused(state: &AppState, refusal: Refusal, token_given: bool) -> ApiError {
    state.metrics.auth_refused(refusal.reason());
    tracing::debug!(
        reason = refusal.reason(),
        "request refused: {}",
        refusal.message()
    );
    let (status, code) = match &refusal {
        Refusal::PublishForbidden => (StatusCode::FORBIDDEN, "publish_forbidden"),
        Refusal::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
        _ => (StatusCode::UNAUTHORIZED, "unauthorized"),
    };
    let error = ApiError::new(status, code, refusal.message());
    if !refusal.is_unauthorized() {
        return error;
    }
    error.with_challenge(if token_given {
        "Bearer error=\"invalid_token\""
    } else {
        "Bearer"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_token_is_the_first_found_of_header_cookie_and_query() {
        let query = Query::parse(Some("token=from-query")).unwrap();
        let none = Query::default();
        let all = headers(&[
            ("authorization", "Bearer from-header"),
            ("cookie", "a=1; comet_token=from-cookie"),
        ]);
        assert_eq!(token(&all, &query), Some("from-header"));
        let cookie_only = headers(&[
            ("cookie", "x=y"),
            ("cookie", "comet_token=from-cookie; z=1"),
        ]);
        assert_eq!(token(&cookie_only, &query), Some("from-cookie"));
        assert_eq!(token(&HeaderMap::new(), &query), Some("from-query"));
        assert_eq!(token(&HeaderMap::new(), &none), None);
        let lower = headers(&[("authorization", "bearer  spaced ")]);
        assert_eq!(token(&lower, &none), Some("spaced"));
        let basic = headers(&[("authorization", "Basic abc")]);
        assert_eq!(token(&basic, &none), None);
    }
}
