//! The rules, with real keys and tokens this crate mints.

use std::path::PathBuf;
use std::time::Duration;

use super::*;

fn name(text: &str) -> ChannelName {
    ChannelName::new(text).unwrap()
}

fn names(list: &[&str]) -> Vec<ChannelName> {
    list.iter().map(|text| name(text)).collect()
}

fn patterns(list: &str) -> Vec<ChannelPattern> {
    ChannelPattern::parse_list(list).unwrap()
}

/// A secret file in a fresh directory.
fn secret_file(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("comet-auth-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("secret");
    std::fs::write(&path, "a-secret-of-at-least-thirty-two-bytes\n").unwrap();
    path
}

fn mint(signing: &SigningKey, publish: &str, subscribe: &str, ttl: Duration) -> String {
    let grants = Grants {
        publish: if publish.is_empty() {
            vec![]
        } else {
            patterns(publish)
        },
        subscribe: if subscribe.is_empty() {
            vec![]
        } else {
            patterns(subscribe)
        },
    };
    signing
        .mint(&TokenRequest {
            grants: &grants,
            ttl,
            subject: Some("tester"),
            issuer: None,
            audience: None,
        })
        .unwrap()
}

#[test]
fn without_credentials_subscribing_is_open_and_publishing_is_local() {
    let open = Authorizer::default();
    assert!(!open.credentials_configured());
    assert!(open.subscribe(None, &names(&["any"])).is_ok());
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    let remote: IpAddr = "10.1.2.3".parse().unwrap();
    assert!(open.publish(None, Some(local), &names(&["a"])).is_ok());
    assert!(
        open.publish(None, Some("::1".parse().unwrap()), &names(&["a"]))
            .is_ok()
    );
    let refused = open
        .publish(None, Some(remote), &names(&["a"]))
        .unwrap_err();
    assert_eq!(refused, Refusal::PublishForbidden);
    assert!(!refused.is_unauthorized());
    assert!(refused.message().contains("--api-keys-file"));
    assert!(matches!(open.listing(None), Ok(Visible::All)));
    assert!(open.metrics(None).is_ok());
}

#[test]
fn api_keys_grant_their_patterns() {
    let keys = ApiKeys::parse(
        "publisher-key-000001 news,sport.*\n",
        std::path::Path::new("k"),
    )
    .unwrap();
    let rules = Authorizer::new(keys, None, patterns("lobby"), loopback());
    assert!(rules.credentials_configured());
    let key = Some("publisher-key-000001");
    assert!(rules.publish(key, None, &names(&["news"])).is_ok());
    assert_eq!(
        rules.publish(key, None, &names(&["weather"])).unwrap_err(),
        Refusal::Forbidden {
            action: Action::Publish,
            channel: Some(name("weather"))
        }
    );
    // Credentials configured: loopback no longer publishes anonymously.
    assert_eq!(
        rules
            .publish(None, Some("127.0.0.1".parse().unwrap()), &names(&["news"]))
            .unwrap_err(),
        Refusal::MissingToken
    );
    assert!(matches!(
        rules.publish(Some("wrong-key-0000000001"), None, &names(&["news"])),
        Err(Refusal::InvalidToken(_))
    ));
    // Public channels need no token; a mix needs grants for the others.
    assert!(rules.subscribe(None, &names(&["lobby"])).is_ok());
    assert_eq!(
        rules
            .subscribe(None, &names(&["lobby", "news"]))
            .unwrap_err(),
        Refusal::MissingToken
    );
    assert!(
        rules
            .subscribe(key, &names(&["lobby", "news", "sport.1"]))
            .is_ok()
    );
    assert!(rules.subscribe(key, &names(&["news", "weather"])).is_err());
    let Visible::Only(visible) = rules.listing(key).unwrap() else {
        panic!("a limited listing");
    };
    assert_eq!(visible.len(), 3);
    assert!(matches!(rules.listing(None), Ok(Visible::Only(_))));
    assert!(rules.metrics(key).is_err());
}

#[test]
fn jwts_are_verified_and_expire() {
    let secret = secret_file("jwt");
    let signing = SigningKey::from_secret_file(&secret).unwrap();
    let verifier = JwtVerifier::new(vec![read_secret(&secret).unwrap()], None, None);
    let rules = Authorizer::new(ApiKeys::default(), Some(verifier), vec![], loopback());
    let token = mint(&signing, "news", "news,user.42.*", Duration::from_secs(60));
    let access = rules
        .subscribe(Some(&token), &names(&["news", "user.42.inbox"]))
        .unwrap();
    let expires_at = access.expires_at.expect("a JWT expires");
    assert!(expires_at > SystemTime::now() + Duration::from_secs(50));
    assert!(rules.publish(Some(&token), None, &names(&["news"])).is_ok());
    assert!(matches!(
        rules.publish(Some(&token), None, &names(&["user.42.inbox"])),
        Err(Refusal::Forbidden { .. })
    ));
    // The second look is answered from memory, the same way.
    assert!(rules.subscribe(Some(&token), &names(&["news"])).is_ok());

    let expired = {
        let grants = Grants::both(patterns("*"));
        // Minted an hour ago for a minute, as it were: exp in the past.
        let claims = serde_json::json!({"exp": 1_000_000_000u64, "comet": {"subscribe": ["*"]}});
        let _ = grants;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"a-secret-of-at-least-thirty-two-bytes")
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        rules
            .subscribe(Some(&expired), &names(&["news"]))
            .unwrap_err(),
        Refusal::Expired
    );
    let forged = {
        let claims = serde_json::json!({"exp": 4_000_000_000u64, "comet": {"subscribe": ["*"]}});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"another-secret-of-thirty-two-bytes!!")
                .unwrap(),
        )
        .unwrap()
    };
    assert!(matches!(
        rules.subscribe(Some(&forged), &names(&["news"])),
        Err(Refusal::InvalidToken(_))
    ));
    assert!(matches!(
        rules.subscribe(Some("not.a.jwt"), &names(&["news"])),
        Err(Refusal::InvalidToken(_))
    ));
}

#[test]
fn issuer_audience_and_nbf_are_checked() {
    let secret = secret_file("claims");
    let key =
        jsonwebtoken::EncodingKey::from_secret(b"a-secret-of-at-least-thirty-two-bytes").unwrap();
    let sign = |claims: serde_json::Value| {
        jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &claims, &key).unwrap()
    };
    let verifier = JwtVerifier::new(
        vec![read_secret(&secret).unwrap()],
        Some("https://auth.example"),
        Some("comet"),
    );
    let rules = Authorizer::new(ApiKeys::default(), Some(verifier), vec![], loopback());
    let subscribe = |token: &str| rules.subscribe(Some(token), &names(&["news"]));
    let future = 4_000_000_000u64;
    let good = sign(serde_json::json!({
        "exp": future, "iss": "https://auth.example", "aud": "comet",
        "comet": {"subscribe": ["news"]}
    }));
    assert!(subscribe(&good).is_ok());
    let wrong_issuer = sign(serde_json::json!({
        "exp": future, "iss": "https://other", "aud": "comet", "comet": {"subscribe": ["news"]}
    }));
    assert_eq!(subscribe(&wrong_issuer).unwrap_err(), Refusal::WrongIssuer);
    let wrong_audience = sign(serde_json::json!({
        "exp": future, "iss": "https://auth.example", "aud": "else", "comet": {"subscribe": ["news"]}
    }));
    assert_eq!(
        subscribe(&wrong_audience).unwrap_err(),
        Refusal::WrongAudience
    );
    let no_issuer = sign(serde_json::json!({
        "exp": future, "aud": "comet", "comet": {"subscribe": ["news"]}
    }));
    assert!(matches!(
        subscribe(&no_issuer),
        Err(Refusal::InvalidToken(_))
    ));
    let early = sign(serde_json::json!({
        "exp": future, "nbf": future - 10, "iss": "https://auth.example", "aud": "comet",
        "comet": {"subscribe": ["news"]}
    }));
    assert_eq!(subscribe(&early).unwrap_err(), Refusal::NotYetValid);
    let bad_pattern = sign(serde_json::json!({
        "exp": future, "iss": "https://auth.example", "aud": "comet",
        "comet": {"subscribe": ["a b"]}
    }));
    assert!(matches!(
        subscribe(&bad_pattern),
        Err(Refusal::InvalidToken(_))
    ));
}

#[test]
fn a_short_or_missing_secret_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("comet-auth-short-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let short = dir.join("short");
    std::fs::write(&short, "tiny\n").unwrap();
    let error = read_secret(&short).unwrap_err().to_string();
    assert!(
        error.contains("short") && error.contains("32 bytes"),
        "{error}"
    );
    assert!(!error.contains("tiny"), "{error}");
    let missing = read_secret(&dir.join("missing")).unwrap_err().to_string();
    assert!(missing.contains("cannot be read"), "{missing}");
    let not_a_key = read_public_key(&short).unwrap_err().to_string();
    assert!(not_a_key.contains("not a PEM public key"), "{not_a_key}");
}

/// A token is refused from its `exp` on, to the instant (the library's
/// whole-second check alone accepted it for up to a second more).
#[test]
fn a_token_is_refused_from_the_instant_it_expires() {
    let secret = secret_file("instant");
    let verifier = JwtVerifier::new(vec![read_secret(&secret).unwrap()], None, None);
    let key =
        jsonwebtoken::EncodingKey::from_secret(b"a-secret-of-at-least-thirty-two-bytes").unwrap();
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    // `exp` is this very second: the library still takes it, Comet must not.
    let claims = serde_json::json!({"exp": now.as_secs(), "comet": {"subscribe": ["*"]}});
    let token =
        jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &claims, &key).unwrap();
    assert_eq!(verifier.verify(&token).unwrap_err(), Refusal::Expired);
}
