//! `comet token`: mints a JWT the way a back end would, so anyone can try
//! authorization without a JWT library, and application back ends in any
//! language have a reference to compare with.

use std::process::ExitCode;

use anyhow::{Context, bail};
use comet_server::comet_auth::{ChannelPattern, Grants, SigningKey, TokenRequest};

use crate::cli::TokenArgs;

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let key = match (&args.jwt_secret_file, &args.jwt_private_key_file) {
        (Some(secret), None) => SigningKey::from_secret_file(secret)?,
        (None, Some(private)) => SigningKey::from_private_key_file(private)?,
        _ => bail!("give one of --jwt-secret-file and --jwt-private-key-file"),
    };
    let patterns = |option: &str, list: &Option<String>| -> anyhow::Result<Vec<ChannelPattern>> {
        match list {
            None => Ok(Vec::new()),
            Some(list) => ChannelPattern::parse_list(list).with_context(|| format!("--{option}")),
        }
    };
    let grants = Grants {
        publish: patterns("publish", &args.publish)?,
        subscribe: patterns("subscribe", &args.subscribe)?,
    };
    if grants.publish.is_empty() && grants.subscribe.is_empty() {
        bail!("a token that allows nothing is of no use: give --subscribe or --publish");
    }
    if args.ttl.0.is_zero() {
        bail!("--ttl must be more than 0");
    }
    let token = key
        .mint(&TokenRequest {
            grants: &grants,
            ttl: args.ttl.0,
            subject: args.subject.as_deref(),
            issuer: args.issuer.as_deref(),
            audience: args.audience.as_deref(),
        })
        .map_err(|error| anyhow::anyhow!("signing the token failed: {error}"))?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
