//! SIGHUP: `comet serve` reads its configuration again (the same command
//! line and environment, the file and the key files it names) and applies
//! what can change while it runs, for requests from then on: API keys,
//! JWT keys, issuer and audience, public channels, anonymous-publish
//! networks, CORS origins and the log level. Open streams the new rules
//! refuse end (`comet_server`'s `transport::grant`); nothing else is
//! dropped. Rules built from unchanged options and key files are not
//! applied again (judging every open stream again would verify every
//! token once more for nothing). A
//! change to any other option is logged as needing a restart, and kept as
//! it was. A reload that fails keeps the configuration in force and logs
//! why.

use std::ffi::OsString;

use comet_server::Rules;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::reload::Handle;

use crate::cli::ServeArgs;
use crate::{auth, config, serve};

/// What a reload needs.
pub struct Reloader {
    pub argv: Vec<OsString>,
    pub running: ServeArgs,
    /// What the rules in force were built from.
    pub rule_sources: auth::RuleSources,
    pub rules: Rules,
    pub log: Handle<EnvFilter, tracing_subscriber::Registry>,
}

impl Reloader {
    /// Reloads once: logs what changed, or why nothing did.
    pub fn reload(&mut self) {
        match self.try_reload() {
            Ok(()) => {}
            Err(error) => tracing::error!(
                "the configuration was not reloaded, the one in force stays: {error:#}"
            ),
        }
    }

    fn try_reload(&mut self) -> anyhow::Result<()> {
        let new = config::reread(&self.argv)?;
        // Everything is checked before anything is applied.
        let rule_sources = auth::rule_sources(&new);
        let authorizer = auth::rules(&new)?;
        let cors = serve::cors_policy(&new.cors_origins)?;
        let filter = EnvFilter::try_new(&new.log)
            .map_err(|error| anyhow::anyhow!("--log {:?}: {error}", new.log))?;
        for option in needs_restart(&self.running, &new) {
            tracing::warn!(
                option,
                "changed in the configuration; a restart is needed to apply it (kept as it was)"
            );
        }
        if rule_sources == self.rule_sources {
            tracing::info!(
                "the authorization options and key files are unchanged: the open streams are not judged again"
            );
        } else {
            // Every open stream is judged again (`comet_server`'s grants).
            self.rules.replace(authorizer);
            self.rule_sources = rule_sources;
        }
        self.rules.replace_cors(cors);
        if new.log != self.running.log {
            self.log
                .reload(filter)
                .map_err(|error| anyhow::anyhow!("changing the log level: {error}"))?;
        }
        tracing::info!(
            "configuration reloaded: {}",
            auth::describe(&self.rules.current(), &new)
        );
        self.running = reloaded(&self.running, new);
        Ok(())
    }
}

/// The options `running` continues with: the reloaded ones from `new`, the
/// others as they were.
fn reloaded(running: &ServeArgs, new: ServeArgs) -> ServeArgs {
    ServeArgs {
        api_keys_file: new.api_keys_file,
        jwt_secret_file: new.jwt_secret_file,
        jwt_public_key_file: new.jwt_public_key_file,
        jwt_issuer: new.jwt_issuer,
        jwt_audience: new.jwt_audience,
        public_channels: new.public_channels,
        anonymous_publish_from: new.anonymous_publish_from,
        cors_origins: new.cors_origins,
        log: new.log,
        ..running.clone()
    }
}

/// The options that differ between `running` and `new` but only take
/// effect at start.
fn needs_restart(running: &ServeArgs, new: &ServeArgs) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! compare {
        ($($field:ident),* $(,)?) => {
            $(if running.$field != new.$field {
                changed.push(stringify!($field));
            })*
        };
    }
    compare!(
        listen,
        memory,
        data_dir,
        retention_messages,
        retention_age,
        max_store_bytes,
        max_body,
        max_channels,
        max_wait,
        sse_retry,
        heartbeat,
        max_connections,
        max_subscribers,
        worker_threads,
        header_timeout,
        body_timeout,
        write_timeout,
        live_window,
        live_window_bytes,
        max_lag,
        max_lag_wait,
        forgotten_channels,
    );
    changed
}
