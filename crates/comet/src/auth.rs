//! The authorization options of `comet serve`, read into the rules the
//! server applies. A file that cannot be read, a key that does not parse or
//! a pattern that is not valid stops the start, naming the file and line
//! (never a secret).

use std::path::PathBuf;

use anyhow::{Context, bail};
use comet_server::comet_auth::{
    ApiKeys, Authorizer, ChannelPattern, IpNet, JwtVerifier, loopback, read_public_key, read_secret,
};

use crate::cli::ServeArgs;

/// What [`rules`] builds the rules from: the authorization options and the
/// bytes of the files they name (a file that cannot be read counts as
/// none). Equal sources build the same rules, so a reload that finds them
/// unchanged leaves the rules, and the open streams, alone.
#[derive(Debug, PartialEq, Eq)]
pub struct RuleSources {
    files_named: (Option<PathBuf>, Option<PathBuf>, Vec<PathBuf>),
    options: (Option<String>, Option<String>, Vec<String>, Vec<String>),
    contents: Vec<Option<Vec<u8>>>,
}

/// The sources of the rules `args` describe, read now.
pub fn rule_sources(args: &ServeArgs) -> RuleSources {
    let contents = args
        .api_keys_file
        .iter()
        .chain(&args.jwt_secret_file)
        .chain(&args.jwt_public_key_file)
        .map(|path| std::fs::read(path).ok())
        .collect();
    RuleSources {
        files_named: (
            args.api_keys_file.clone(),
            args.jwt_secret_file.clone(),
            args.jwt_public_key_file.clone(),
        ),
        options: (
            args.jwt_issuer.clone(),
            args.jwt_audience.clone(),
            args.public_channels.clone(),
            args.anonymous_publish_from.clone(),
        ),
        contents,
    }
}

/// The rules the options describe.
pub fn rules(args: &ServeArgs) -> anyhow::Result<Authorizer> {
    let api_keys = match &args.api_keys_file {
        Some(path) => ApiKeys::read(path)?,
        None => ApiKeys::default(),
    };
    let mut keys = Vec::new();
    if let Some(path) = &args.jwt_secret_file {
        keys.push(read_secret(path)?);
    }
    for path in &args.jwt_public_key_file {
        keys.push(read_public_key(path)?);
    }
    if keys.is_empty() && (args.jwt_issuer.is_some() || args.jwt_audience.is_some()) {
        bail!(
            "--jwt-issuer and --jwt-audience need a JWT key (--jwt-secret-file or --jwt-public-key-file)"
        );
    }
    let jwt = (!keys.is_empty()).then(|| {
        JwtVerifier::new(
            keys,
            args.jwt_issuer.as_deref(),
            args.jwt_audience.as_deref(),
        )
    });
    let public = args
        .public_channels
        .iter()
        .map(|pattern| {
            ChannelPattern::parse(pattern.trim()).with_context(|| "--public-channels".to_string())
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let anonymous_publish = if args.anonymous_publish_from.is_empty() {
        loopback()
    } else {
        args.anonymous_publish_from
            .iter()
            .map(|network| network_of(network.trim()))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    Ok(Authorizer::new(api_keys, jwt, public, anonymous_publish))
}

/// A network, or a single address as one.
pub fn network_of(text: &str) -> anyhow::Result<IpNet> {
    if let Ok(network) = text.parse::<IpNet>() {
        return Ok(network);
    }
    text.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .with_context(|| {
            format!(
                "--anonymous-publish-from {text:?} is not a network like 10.0.0.0/8 or an address"
            )
        })
}

/// What the log says of the rules at start (no secret).
pub fn describe(rules: &Authorizer, args: &ServeArgs) -> String {
    if !rules.credentials_configured() {
        let from = if args.anonymous_publish_from.is_empty() {
            "loopback".to_string()
        } else {
            args.anonymous_publish_from.join(", ")
        };
        return format!(
            "no credentials configured: anyone may subscribe; publishing is allowed from {from} only"
        );
    }
    let mut parts = Vec::new();
    if let Some(path) = &args.api_keys_file {
        parts.push(format!("API keys from {}", path.display()));
    }
    if args.jwt_secret_file.is_some() {
        parts.push("JWTs signed with the HS256 secret".to_string());
    }
    if !args.jwt_public_key_file.is_empty() {
        parts.push(format!(
            "JWTs signed with {} public key(s)",
            args.jwt_public_key_file.len()
        ));
    }
    if !args.public_channels.is_empty() {
        parts.push(format!(
            "public channels {}",
            args.public_channels.join(", ")
        ));
    }
    format!("tokens required: {}", parts.join("; "))
}
