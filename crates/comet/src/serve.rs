//! `comet serve`: validate the options, build the store, hub and server,
//! bind, print the address, and run until SIGINT or SIGTERM.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use comet_hub::{Hub, HubConfig, PaceConfig};
use comet_server::{CorsPolicy, Rules, Server, ServerConfig};
use comet_store::{IdempotencyOptions, MemoryStore, Retention, Store, StoreOptions};
use comet_store_disk::DiskStore;
use comet_store_redis::{RedisOptions, RedisStore};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload::Handle;
use tracing_subscriber::util::SubscriberInitExt;

use crate::auth;
use crate::cli::ServeArgs;
use crate::limits;
use crate::reload::Reloader;

pub fn run(args: ServeArgs, argv: Vec<std::ffi::OsString>) -> anyhow::Result<ExitCode> {
    let log = install_logging(&args.log)?;
    let open_files = limits::raise_open_files_limit();
    let (retention, hub_config, server_config) = validate(&args, open_files)?;
    // Read before the rules: a key file changed in between makes the next
    // reload apply the rules again, never skip them.
    let rule_sources = auth::rule_sources(&args);
    let authorizer = auth::rules(&args)?;
    tracing::info!("{}", auth::describe(&authorizer, &args));
    let rules = Rules::new(authorizer);
    tracing::info!(
        open_files_limit = open_files.soft,
        raised_from = open_files.raised_from,
        max_connections = server_config.max_connections,
        max_subscribers = server_config.max_subscribers,
        "connection limits"
    );
    let mut builder = match args.worker_threads.map(std::num::NonZeroUsize::get) {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(threads) = threads {
                builder.worker_threads(threads);
            }
            builder
        }
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The local stores open before the node listens (a data directory
    // another server holds stops it at once); with Redis the node listens
    // first and answers 503 until Redis is reached.
    let local = if args.redis.is_none() {
        Some(runtime.block_on(open_store(&args, &retention))?)
    } else {
        None
    };
    runtime.block_on(async move {
        let listener = comet_server::bind(args.listen)
            .and_then(tokio::net::TcpListener::from_std)
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr()?;
        let shutdown = shutdown_signal()?;
        announce(&format!("listening on http://{address}"));
        let store = match local {
            Some(store) => store,
            None => {
                let waiting = "the node is reaching its Redis; it serves once Redis answers";
                let opening = async {
                    tokio::select! {
                        store = open_store(&args, &retention) => store.map(Some),
                        () = shutdown_signal()? => Ok(None),
                    }
                };
                let opened = comet_server::connection::unavailable_until(
                    &listener,
                    opening,
                    waiting.to_string(),
                )
                .await?;
                let Some(store) = opened else {
                    tracing::info!("stopped before Redis was reached");
                    return Ok(ExitCode::SUCCESS);
                };
                store
            }
        };
        let hub = Hub::new(store, hub_config.within(&retention));
        tracing::info!(%address, "comet serving");
        let sweeper = hub.clone();
        tokio::spawn(async move {
            sweeper
                .enforce_retention_every(Duration::from_secs(1))
                .await;
        });
        let sharer = hub.clone();
        tokio::spawn(async move {
            sharer.share_subscribers_every(Duration::from_secs(1)).await;
        });
        let reloader = Reloader {
            argv,
            running: args.clone(),
            rule_sources,
            rules: rules.clone(),
            log,
        };
        reload_on_hangup(reloader)?;
        Server::with_rules(hub, server_config, rules)?
            .serve(listener, shutdown)
            .await
            .context("serving")?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

fn validate(
    args: &ServeArgs,
    open_files: limits::OpenFiles,
) -> anyhow::Result<(Retention, HubConfig, ServerConfig)> {
    if args.retention_messages == 0 {
        bail!("--retention-messages must be at least 1");
    }
    if args.idempotency_window.0 < Duration::from_secs(1) {
        bail!("--idempotency-window must be at least 1s");
    }
    if args.idempotency_max_keys == 0 {
        bail!("--idempotency-max-keys must be at least 1");
    }
    if args.max_connections == Some(0) {
        bail!("--max-connections must be at least 1");
    }
    let connections =
        limits::connection_limits(open_files, args.max_connections, args.max_subscribers);
    let max_body = usize::try_from(args.max_body.0)
        .ok()
        .filter(|size| *size > 0)
        .context("--max-body must be between 1 byte and the address space")?;
    let retention = Retention {
        max_messages: args.retention_messages,
        max_age: (!args.retention_age.0.is_zero()).then_some(args.retention_age.0),
        max_bytes: (args.max_store_bytes.0 > 0).then_some(args.max_store_bytes.0),
        forgotten_channels: args.forgotten_channels,
    };
    if args.max_lag > 0 && args.max_lag_wait.0.is_zero() {
        bail!("--max-lag-wait must be more than 0 (or --max-lag 0 to publish without waiting)");
    }
    let hub = HubConfig {
        pace: PaceConfig {
            max_lag: args.max_lag,
            max_wait: args.max_lag_wait.0,
        },
        live_window: args.live_window.max(1),
        live_window_bytes: usize::try_from(args.live_window_bytes.0)
            .context("--live-window-bytes must fit the address space")?,
    };
    let max_batch_bytes = usize::try_from(args.max_batch_body.0)
        .ok()
        .filter(|size| *size > 0)
        .context("--max-batch-body must be between 1 byte and the address space")?;
    let server = ServerConfig {
        max_body_bytes: max_body,
        max_batch_messages: args.max_batch_messages,
        max_batch_bytes,
        max_channels_per_subscription: args.max_channels,
        max_wait: args.max_wait.0,
        sse_retry: args.sse_retry.0,
        heartbeat: args.heartbeat.0,
        max_connections: connections.max_connections,
        max_subscribers: connections.max_subscribers,
        header_read_timeout: args.header_timeout.0,
        body_read_timeout: args.body_timeout.0,
        write_timeout: args.write_timeout.0,
        max_backlog: args.retention_messages,
        cors: cors_policy(&args.cors_origins)?,
        ..ServerConfig::default()
    };
    server.validate()?;
    Ok((retention, hub, server))
}

pub fn cors_policy(origins: &[String]) -> anyhow::Result<CorsPolicy> {
    if origins.is_empty() {
        return Ok(CorsPolicy::SameOrigin);
    }
    if origins.iter().any(|origin| origin == "*") {
        return Ok(CorsPolicy::Any);
    }
    for origin in origins {
        let well_formed = (origin.starts_with("http://") || origin.starts_with("https://"))
            && !origin.trim_end_matches('/').contains(['?', '#'])
            && origin
                .split("://")
                .nth(1)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
        if !well_formed {
            bail!(
                "--cors-origin {origin:?} is not an origin like https://app.example.com or http://localhost:3000"
            );
        }
    }
    Ok(CorsPolicy::Origins(origins.to_vec()))
}

async fn open_store(args: &ServeArgs, retention: &Retention) -> anyhow::Result<Arc<dyn Store>> {
    let options = StoreOptions {
        retention: retention.clone(),
        idempotency: IdempotencyOptions {
            window: args.idempotency_window.0,
            max_keys: args.idempotency_max_keys,
        },
        ..StoreOptions::default()
    };
    if args.memory {
        tracing::info!("history is kept in memory only (--memory)");
        return Ok(Arc::new(MemoryStore::new(options)));
    }
    if let Some(url) = &args.redis {
        let redis = RedisOptions {
            log_length: args.redis_log_length.max(1),
            ..RedisOptions::new(url.clone())
        };
        let store = RedisStore::open(redis, options).await?;
        return Ok(Arc::new(store));
    }
    let store = DiskStore::open(&args.data_dir, options)
        .with_context(|| format!("cannot use the data directory {}", args.data_dir.display()))?;
    Ok(Arc::new(store))
}

/// Installs the log, at `directives` (changed by a reload through the
/// handle returned).
fn install_logging(
    directives: &str,
) -> anyhow::Result<Handle<EnvFilter, tracing_subscriber::Registry>> {
    let filter = EnvFilter::try_new(directives)
        .map_err(|error| anyhow::anyhow!("--log {directives:?}: {error}"))?;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    // Colours only for a person at a terminal: a log file or a journal
    // gets plain text.
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr),
        )
        .init();
    Ok(handle)
}

/// Reloads the configuration at every SIGHUP (see `crate::reload`).
fn reload_on_hangup(mut reloader: Reloader) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).context("handling SIGHUP")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            reloader.reload();
        }
    });
    Ok(())
}

/// Writes a line for whoever started the server (scripts wait for it).
fn announce(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Installs the SIGINT and SIGTERM handlers now (so a signal sent as soon
/// as the address is printed is not lost to the default action), and
/// returns the future that resolves on the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
    })
}
