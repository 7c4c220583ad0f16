//! Comet's HTTP server: the API of `API.md` over a [`Hub`].
//!
//! - [`Server::router`] is the plain axum router: publishing
//!   (`publish`), the transports ([`transport`]), inspection (`inspect`)
//!   and metrics.
//! - [`Server::serve`] runs it on a bound listener until a shutdown future
//!   resolves, with what a public server needs around the router: a
//!   connection cap, a request-head timeout, a write timeout for stuck
//!   clients, and a graceful end for open streams ([`connection`]).
//!
//! Tests and the binary share both entry points: a test binds
//! `127.0.0.1:0`, passes the listener, and talks HTTP to it.

mod assets;
pub mod auth;
mod batch;
pub mod config;
pub mod connection;
mod cors;
pub mod error;
mod inspect;
pub mod metrics;
mod params;
mod publish;
mod shutdown;
mod throttle;
pub mod transport;

use std::future::Future;
use std::sync::Arc;

pub use auth::Rules;
use axum::Router;
use axum::routing::{get, post};
pub use comet_auth;
use comet_hub::Hub;
pub use config::{ConnectionLimits, CorsPolicy, InvalidConfig, ServerConfig};
use error::ApiError;
use http::{Method, StatusCode, Uri};
use metrics::Metrics;
use throttle::Throttled;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Everything a request handler may need. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState(Arc<AppInner>);

pub(crate) struct AppInner {
    pub(crate) hub: Hub,
    pub(crate) config: ServerConfig,
    pub(crate) metrics: Metrics,
    /// Cancelled when the server shuts down: open streams and held long
    /// polls end cleanly.
    pub(crate) shutdown: shutdown::Shutdown,
    /// Who may publish and subscribe.
    pub(crate) rules: Rules,
    /// Places under the subscriber cap; each open subscription holds one.
    subscriber_places: Arc<Semaphore>,
    /// Duplicated sockets of publishing connections left to hold (see
    /// `connection::at_commit`).
    pub(crate) answer_sockets: Arc<Semaphore>,
    subscribers_refused: Throttled,
}

impl AppInner {
    /// A place under the subscriber cap for a subscription about to open,
    /// or the `503 too_many_subscribers` answer when none is left.
    pub(crate) fn subscriber_place(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(place) = self.subscriber_places.clone().try_acquire_owned() {
            return Ok(place);
        }
        self.metrics.subscription_refused();
        let limit = self.config.max_subscribers;
        self.subscribers_refused.warn(|left_out| {
            tracing::warn!(
                limit,
                refused_since_last_warning = left_out,
                "refusing a subscription: the limit of {limit} open subscriptions is reached \
                 (--max-subscribers); publishes and health checks are still served"
            );
        });
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_subscribers",
            format!("the server's limit of {limit} open subscriptions is reached; retry later"),
        ))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// A Comet HTTP server over a hub.
pub struct Server {
    state: AppState,
}

impl Server {
    /// A server for `hub` with `config`, once the configuration is checked
    /// ([`ServerConfig::validate`]), with the default rules (nothing
    /// configured: subscribing open, publishing from loopback only).
    pub fn new(hub: Hub, config: ServerConfig) -> Result<Self, InvalidConfig> {
        Self::with_rules(hub, config, Rules::default())
    }

    /// A server for `hub` with `config` applying `rules` (keep a clone of
    /// them to replace them while it runs).
    pub fn with_rules(hub: Hub, config: ServerConfig, rules: Rules) -> Result<Self, InvalidConfig> {
        config.validate()?;
        rules.replace_cors(config.cors.clone());
        Ok(Self {
            state: AppState(Arc::new(AppInner {
                metrics: Metrics::new(hub.clone(), &config),
                rules,
                subscriber_places: Arc::new(Semaphore::new(config.max_subscribers)),
                answer_sockets: Arc::new(Semaphore::new(config::answer_sockets(
                    config.max_connections,
                ))),
                subscribers_refused: Throttled::new(REFUSAL_WARNING_INTERVAL),
                hub,
                config,
                shutdown: shutdown::Shutdown::default(),
            })),
        })
    }

    /// The routes of API.md.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting,
    /// ends open streams and held polls cleanly, and waits (up to the
    /// configured grace period) for connections to finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let router = self.router();
        connection::serve(listener, router, self.state, shutdown).await
    }
}

/// Refusals of one kind are logged at most this often.
pub(crate) const REFUSAL_WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// How many connections the kernel may complete before the server accepts
/// them (capped by `net.core.somaxconn`). The usual default of 128 drops
/// connection attempts when a few hundred clients connect at once (their
/// retry comes a second later), which is exactly what happens when a page
/// with many readers reloads or a server restarts under its subscribers.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Binds a listening socket on `address` with [`LISTEN_BACKLOG`]; hand it
/// to [`Server::serve`] (through `tokio::net::TcpListener::from_std`).
pub fn bind(address: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn router(state: AppState) -> Router {
    assets::routes(Router::new())
        .route("/pub", post(batch::publish_batch))
        .route("/pub/{channel}", post(publish::publish))
        .route("/poll/{channels}", get(transport::poll::poll))
        .route("/stream/{channels}", get(transport::ndjson::stream))
        .route("/sse/{channels}", get(transport::sse::sse))
        .route("/ws/{channels}", get(transport::websocket::through_router))
        .route("/channels", get(inspect::channels))
        .route("/channels/{channel}", get(inspect::channel))
        .route("/healthz", get(inspect::healthz))
        .route("/metrics", get(inspect::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors::cors,
        ))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
