//! Who may publish and subscribe, decided without any HTTP.
//!
//! A request brings at most one token (the server finds it in the
//! `Authorization` header, the `comet_token` cookie or the `token` query
//! parameter). A token is an API key ([`ApiKeys`]) or a JWT
//! ([`JwtVerifier`]); either gives [`Grants`]: channel patterns to publish
//! to and to subscribe to. An [`Authorizer`] holds the configured keys,
//! the public channels anyone may subscribe to, and the peers that may
//! publish without a token while no credentials are configured, and
//! answers each request with an [`Access`] (and when it ends) or a
//! [`Refusal`] (401 or 403, with the reason counted in the metrics).
//!
//! Without any configuration the server stays usable locally and safe
//! elsewhere: subscribing is open, publishing is allowed from loopback
//! only.

mod api_keys;
mod grants;
mod jwt;
mod pattern;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use api_keys::{ApiKeys, MIN_KEY_LEN};
use comet_protocol::ChannelName;
pub use grants::{Action, Grants};
pub use ipnet::IpNet;
pub use jsonwebtoken::{Algorithm, DecodingKey};
pub use jwt::{JwtVerifier, SigningKey, TokenRequest, Verified, read_public_key, read_secret};
pub use pattern::{ChannelPattern, InvalidPattern, any_matches};

/// A configuration file or value that cannot be used: which file, which
/// line, and why. Never quotes a secret.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {reason}", path.display(), line.map(|line| format!(":{line}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// The line, when the problem is on one.
    pub line: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    fn file(path: &Path, error: std::io::Error) -> Self {
        Self::whole(path, format!("cannot be read: {error}"))
    }

    fn whole(path: &Path, reason: String) -> Self {
        Self {
            path: path.to_path_buf(),
            line: None,
            reason,
        }
    }

    fn line(path: &Path, line: usize, reason: String) -> Self {
        Self {
            path: path.to_path_buf(),
            line: Some(line),
            reason,
        }
    }
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A token is needed and none was given (401).
    MissingToken,
    /// The token is neither a known API key nor a valid JWT (401).
    InvalidToken(String),
    /// The JWT expired (401).
    Expired,
    /// The JWT's `nbf` is still to come (401).
    NotYetValid,
    /// The JWT was issued by another issuer (401).
    WrongIssuer,
    /// The JWT is meant for another audience (401).
    WrongAudience,
    /// A valid token that does not grant this (403).
    Forbidden {
        /// What was asked.
        action: Action,
        /// The first channel not granted (none: the metrics).
        channel: Option<ChannelName>,
    },
    /// No credentials are configured and the peer may not publish without
    /// one (403).
    PublishForbidden,
}

impl Refusal {
    /// 401 (the client must authenticate) rather than 403.
    pub fn is_unauthorized(&self) -> bool {
        !matches!(self, Refusal::Forbidden { .. } | Refusal::PublishForbidden)
    }

    /// The reason, as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::MissingToken => "missing_token",
            Refusal::InvalidToken(_) => "invalid_token",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::WrongIssuer => "wrong_issuer",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::Forbidden { .. } => "forbidden",
            Refusal::PublishForbidden => "publish_forbidden",
        }
    }

    /// What to tell the client.
    pub fn message(&self) -> String {
        match self {
            Refusal::MissingToken => {
                "a token is needed: send it as `Authorization: Bearer TOKEN`, \
                                      the comet_token cookie or the token query parameter"
                    .into()
            }
            Refusal::InvalidToken(why) => format!("the token is not valid: {why}"),
            Refusal::Expired => "the token expired: get a fresh one".into(),
            Refusal::NotYetValid => "the token is not valid yet (its nbf is to come)".into(),
            Refusal::WrongIssuer => "the token comes from another issuer".into(),
            Refusal::WrongAudience => "the token is meant for another audience".into(),
            Refusal::Forbidden {
                action,
                channel: Some(channel),
            } => format!(
                "the token does not allow {} channel {channel}",
                match action {
                    Action::Publish => "publishing to",
                    Action::Subscribe => "subscribing to",
                }
            ),
            Refusal::Forbidden { channel: None, .. } => {
                "the token does not grant every channel (*), which the metrics need".into()
            }
            Refusal::PublishForbidden => "publishing needs a credential from this address: \
                 configure an API key (--api-keys-file) or JWTs (--jwt-secret-file, \
                 --jwt-public-key-file) and send a token, or allow this peer with \
                 --anonymous-publish-from"
                .into(),
        }
    }
}

/// What an allowed request may do, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// When the credential stops allowing it (a JWT's `exp`); `None`: for as
    /// long as the request lasts.
    pub expires_at: Option<SystemTime>,
}

impl Access {
    const UNLIMITED: Self = Self { expires_at: None };
}

/// Which channels a listing may show.
#[derive(Clone, Debug)]
pub enum Visible {
    /// All of them.
    All,
    /// Those these patterns name.
    Only(Vec<ChannelPattern>),
}

impl Visible {
    /// True when `channel` may be shown.
    pub fn shows(&self, channel: &ChannelName) -> bool {
        match self {
            Visible::All => true,
            Visible::Only(patterns) => any_matches(patterns, channel),
        }
    }
}

/// The configured credentials and rules (see the crate doc).
pub struct Authorizer {
    api_keys: ApiKeys,
    jwt: Option<JwtVerifier>,
    public: Vec<ChannelPattern>,
    anonymous_publish: Vec<IpNet>,
}

/// Loopback, the default of `anonymous_publish`.
pub fn loopback() -> Vec<IpNet> {
    vec![
        "127.0.0.0/8".parse().expect("a network"),
        "::1/128".parse().expect("a network"),
    ]
}

impl Default for Authorizer {
    /// Nothing configured: subscribing open, publishing from loopback.
    fn default() -> Self {
        Self::new(ApiKeys::default(), None, Vec::new(), loopback())
    }
}

/// What a token turned out to allow, and until when.
type Credential = (std::sync::Arc<Grants>, Option<SystemTime>);

impl Authorizer {
    /// The rules from their parts.
    pub fn new(
        api_keys: ApiKeys,
        jwt: Option<JwtVerifier>,
        public: Vec<ChannelPattern>,
        anonymous_publish: Vec<IpNet>,
    ) -> Self {
        Self {
            api_keys,
            jwt,
            public,
            anonymous_publish,
        }
    }

    /// True when API keys or JWT keys are configured: tokens are then
    /// needed, and the anonymous-publish rule no longer applies.
    pub fn credentials_configured(&self) -> bool {
        !self.api_keys.is_empty() || self.jwt.is_some()
    }

    /// Reads `token`.
    fn credential(&self, token: &str) -> Result<Credential, Refusal> {
        if let Some(grants) = self.api_keys.grants(token) {
            return Ok((grants.clone(), None));
        }
        match &self.jwt {
            Some(jwt) => {
                let verified = jwt.verify(token)?;
                Ok((verified.grants, Some(verified.expires_at)))
            }
            None => Err(Refusal::InvalidToken("it is not a known API key".into())),
        }
    }

    /// May this request publish to `channels`? `peer` matters only while no
    /// credentials are configured.
    pub fn publish(
        &self,
        token: Option<&str>,
        peer: Option<IpAddr>,
        channels: &[ChannelName],
    ) -> Result<Access, Refusal> {
        if !self.credentials_configured() {
            let allowed = peer.is_some_and(|peer| {
                self.anonymous_publish
                    .iter()
                    .any(|network| network.contains(&peer))
            });
            return if allowed {
                Ok(Access::UNLIMITED)
            } else {
                Err(Refusal::PublishForbidden)
            };
        }
        self.granted(token, Action::Publish, channels)
    }

    /// May this request subscribe to `channels`? Public channels need no
    /// token; a subscription to several needs a grant for each of the
    /// others.
    pub fn subscribe(
        &self,
        token: Option<&str>,
        channels: &[ChannelName],
    ) -> Result<Access, Refusal> {
        if !self.credentials_configured()
            || channels
                .iter()
                .all(|channel| any_matches(&self.public, channel))
        {
            return Ok(Access::UNLIMITED);
        }
        let private: Vec<ChannelName> = channels
            .iter()
            .filter(|channel| !any_matches(&self.public, channel))
            .cloned()
            .collect();
        self.granted(token, Action::Subscribe, &private)
    }

    /// Which channels a listing shows this request: all of them without
    /// credentials configured; otherwise the public ones and those its
    /// token may subscribe to.
    pub fn listing(&self, token: Option<&str>) -> Result<Visible, Refusal> {
        if !self.credentials_configured() {
            return Ok(Visible::All);
        }
        let mut patterns = self.public.clone();
        if let Some(token) = token {
            let (grants, _) = self.credential(token)?;
            patterns.extend(grants.subscribe.iter().cloned());
        }
        if patterns.iter().any(ChannelPattern::is_everything) {
            return Ok(Visible::All);
        }
        Ok(Visible::Only(patterns))
    }

    /// May this request read the metrics? Open without credentials
    /// configured or when every channel is public; otherwise it needs a
    /// token granting `*`.
    pub fn metrics(&self, token: Option<&str>) -> Result<(), Refusal> {
        if !self.credentials_configured() || self.public.iter().any(ChannelPattern::is_everything) {
            return Ok(());
        }
        let token = token.ok_or(Refusal::MissingToken)?;
        let (grants, _) = self.credential(token)?;
        if grants.has_everything() {
            Ok(())
        } else {
            Err(Refusal::Forbidden {
                action: Action::Subscribe,
                channel: None,
            })
        }
    }

    fn granted(
        &self,
        token: Option<&str>,
        action: Action,
        channels: &[ChannelName],
    ) -> Result<Access, Refusal> {
        let token = token.ok_or(Refusal::MissingToken)?;
        let (grants, expires_at) = self.credential(token)?;
        if let Some(channel) = channels
            .iter()
            .find(|channel| !grants.allows(action, channel))
        {
            return Err(Refusal::Forbidden {
                action,
                channel: Some(channel.clone()),
            });
        }
        Ok(Access { expires_at })
    }
}

#[cfg(test)]
mod tests;
