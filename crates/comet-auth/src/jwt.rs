//! JSON Web Tokens: verifying them, and minting them (`comet token`).
//!
//! The algorithm comes from the configured key, never from the token: a
//! secret means HS256, a public key's type means RS256, ES256 (P-256) or
//! EdDSA (Ed25519). A token's header may only choose among the configured
//! keys. `exp` is required; `nbf`, `iss` and `aud` are checked (the last two
//! when configured). There is no leeway: keep clocks in sync.
//!
//! What a token allows is its `comet` claim: `{"publish": [PATTERN…],
//! "subscribe": [PATTERN…]}`. A token whose claim holds an invalid pattern
//! is invalid.
//!
//! Verified tokens are remembered by their text until they expire (a
//! bounded table), so a client that sends the same token with every
//! request pays for one signature check.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::grants::Grants;
use crate::pattern::ChannelPattern;
use crate::{ConfigError, Refusal};

/// Most verified tokens remembered at once.
const REMEMBERED: usize = 8192;

/// The keys tokens are verified with, and what else is checked.
pub struct JwtVerifier {
    /// Each key with the validation of its own algorithm (a validation
    /// naming algorithms of other key types refuses the key).
    keys: Vec<(Algorithm, DecodingKey, Validation)>,
    remembered: Mutex<HashMap<String, Verified>>,
}

/// A token found valid: what it allows, and until when.
#[derive(Clone, Debug)]
pub struct Verified {
    /// Its grants.
    pub grants: Arc<Grants>,
    /// Its `exp`.
    pub expires_at: SystemTime,
}

/// The claims Comet reads.
#[derive(Debug, Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default)]
    comet: CometClaim,
}

/// The `comet` claim, as tokens carry it.
#[derive(Debug, Default, Deserialize, Serialize)]
struct CometClaim {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    publish: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    subscribe: Vec<String>,
}

fn seconds_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl JwtVerifier {
    /// A verifier for the given keys (at least one), checking `issuer` and
    /// `audience` when given.
    pub fn new(
        keys: Vec<(Algorithm, DecodingKey)>,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Self {
        let keys = keys
            .into_iter()
            .map(|(algorithm, key)| {
                let validation = validation_for(algorithm, issuer, audience);
                (algorithm, key, validation)
            })
            .collect();
        Self {
            keys,
            remembered: Mutex::new(HashMap::new()),
        }
    }
    /// Verifies `token`.
    pub fn verify(&self, token: &str) -> Result<Verified, Refusal> {
        let now = SystemTime::now();
        if let Some(verified) = self.remembered(token, now) {
            return Ok(verified);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Refusal::InvalidToken("it is not a JWT".into()))?;
        let mut last_error = Refusal::InvalidToken(format!(
            "its algorithm {:?} is not one this server accepts",
            header.alg
        ));
        for (algorithm, key, validation) in &self.keys {
            if *algorithm != header.alg {
                continue;
            }
            match jsonwebtoken::decode::<Claims>(token, key, validation) {
                Ok(data) => {
                    let expires_at = UNIX_EPOCH + Duration::from_secs(data.claims.exp);
                    // The library compares whole seconds, and would accept a
                    // token for up to a second past its `exp`; open streams
                    // end at `exp` exactly, and so does the token.
                    if expires_at <= now {
                        return Err(Refusal::Expired);
                    }
                    let verified = Verified {
                        grants: Arc::new(grants_of(data.claims.comet)?),
                        expires_at,
                    };
                    self.remember(token, &verified);
                    return Ok(verified);
                }
                Err(error) => last_error = refusal_of(error.kind()),
            }
        }
        Err(last_error)
    }

    fn remembered(&self, token: &str, now: SystemTime) -> Option<Verified> {
        let remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        remembered
            .get(token)
            .filter(|verified| verified.expires_at > now)
            .cloned()
    }

    fn remember(&self, token: &str, verified: &Verified) {
        let mut remembered = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        if remembered.len() >= REMEMBERED {
            let now = SystemTime::now();
            remembered.retain(|_, verified| verified.expires_at > now);
            if remembered.len() >= REMEMBERED {
                remembered.clear();
            }
        }
        remembered.insert(token.to_string(), verified.clone());
    }
}

/// What is checked of a token signed with `algorithm`.
fn validation_for(
    algorithm: Algorithm,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = 0;
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(issuer) = issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        // A token naming an audience is fine when none is configured.
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

fn grants_of(claim: CometClaim) -> Result<Grants, Refusal> {
    let parse = |patterns: Vec<String>| -> Result<Vec<ChannelPattern>, Refusal> {
        patterns
            .iter()
            .map(|pattern| {
                ChannelPattern::parse(pattern)
                    .map_err(|error| Refusal::InvalidToken(format!("its comet claim: {error}")))
            })
            .collect()
    };
    Ok(Grants {
        publish: parse(claim.publish)?,
        subscribe: parse(claim.subscribe)?,
    })
}

fn refusal_of(kind: &ErrorKind) -> Refusal {
    match kind {
        ErrorKind::ExpiredSignature => Refusal::Expired,
        ErrorKind::ImmatureSignature => Refusal::NotYetValid,
        ErrorKind::InvalidIssuer => Refusal::WrongIssuer,
        ErrorKind::InvalidAudience => Refusal::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => {
            Refusal::InvalidToken(format!("it has no {claim:?} claim"))
        }
        ErrorKind::InvalidSignature => Refusal::InvalidToken("its signature is wrong".into()),
        _ => Refusal::InvalidToken("it cannot be read".into()),
    }
}

/// Reads a secret file: its bytes, a trailing newline dropped.
pub fn read_secret(path: &Path) -> Result<(Algorithm, DecodingKey), ConfigError> {
    let secret = secret_bytes(path)?;
    let key = DecodingKey::from_secret(&secret)
        .map_err(|error| ConfigError::whole(path, format!("not a usable secret: {error}")))?;
    Ok((Algorithm::HS256, key))
}

fn secret_bytes(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let mut secret = std::fs::read(path).map_err(|error| ConfigError::file(path, error))?;
    if secret.ends_with(b"\n") {
        secret.pop();
        if secret.ends_with(b"\r") {
            secret.pop();
        }
    }
    if secret.len() < 32 {
        return Err(ConfigError::whole(
            path,
            "the secret is too short to be safe for HS256 (at least 32 bytes)".into(),
        ));
    }
    Ok(secret)
}

/// Reads a PEM public key; its type chooses the algorithm.
pub fn read_public_key(path: &Path) -> Result<(Algorithm, DecodingKey), ConfigError> {
    let pem = std::fs::read(path).map_err(|error| ConfigError::file(path, error))?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((Algorithm::RS256, key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((Algorithm::ES256, key));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok((Algorithm::EdDSA, key));
    }
    Err(ConfigError::whole(
        path,
        "not a PEM public key of a kind Comet verifies (RSA, EC P-256 or Ed25519)".into(),
    ))
}

/// A key to sign tokens with (`comet token`): a secret, or a PEM private
/// key.
pub struct SigningKey {
    algorithm: Algorithm,
    key: EncodingKey,
}

impl SigningKey {
    /// An HS256 key from a secret file.
    pub fn from_secret_file(path: &Path) -> Result<Self, ConfigError> {
        let secret = secret_bytes(path)?;
        let key = EncodingKey::from_secret(&secret)
            .map_err(|error| ConfigError::whole(path, format!("not a usable secret: {error}")))?;
        Ok(Self {
            algorithm: Algorithm::HS256,
            key,
        })
    }

    /// A key from a PEM private key file; its type chooses the algorithm.
    pub fn from_private_key_file(path: &Path) -> Result<Self, ConfigError> {
        let pem = std::fs::read(path).map_err(|error| ConfigError::file(path, error))?;
        let found = [
            (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem)),
            (Algorithm::ES256, EncodingKey::from_ec_pem(&pem)),
            (Algorithm::EdDSA, EncodingKey::from_ed_pem(&pem)),
        ]
        .into_iter()
        .find_map(|(algorithm, key)| key.ok().map(|key| (algorithm, key)));
        let Some((algorithm, key)) = found else {
            return Err(ConfigError::whole(
                path,
                "not a PEM private key of a kind Comet signs with (RSA, EC P-256 or Ed25519)"
                    .into(),
            ));
        };
        Ok(Self { algorithm, key })
    }

    /// The algorithm tokens are signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// A token granting `grants` until `ttl` from now, with `sub`, `iss`
    /// and `aud` when given.
    pub fn mint(&self, request: &TokenRequest<'_>) -> Result<String, String> {
        #[derive(Serialize)]
        struct Minted<'a> {
            exp: u64,
            iat: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            sub: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            iss: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            aud: Option<&'a str>,
            comet: CometClaim,
        }
        let now = SystemTime::now();
        let claims = Minted {
            exp: seconds_since_epoch(now + request.ttl),
            iat: seconds_since_epoch(now),
            sub: request.subject,
            iss: request.issuer,
            aud: request.audience,
            comet: CometClaim {
                publish: request
                    .grants
                    .publish
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                subscribe: request
                    .grants
                    .subscribe
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            },
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key)
            .map_err(|error| error.to_string())
    }
}

/// What a minted token says.
pub struct TokenRequest<'a> {
    /// What it allows.
    pub grants: &'a Grants,
    /// How long it lives.
    pub ttl: Duration,
    /// Its `sub`.
    pub subject: Option<&'a str>,
    /// Its `iss`.
    pub issuer: Option<&'a str>,
    /// Its `aud`.
    pub audience: Option<&'a str>,
}
