//! The real server, in-process, on an ephemeral loopback port, over the
//! store users get by default (the durable one) unless a test or the
//! environment asks for another.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use comet_hub::{Hub, HubConfig, PaceConfig};
use comet_server::comet_auth::Authorizer;
use comet_server::{ConnectionLimits, Rules, Server, ServerConfig};
use comet_store::{MemoryStore, Retention, Store, StoreOptions};
use comet_store_disk::DiskStore;
use tokio::sync::oneshot;

/// The store behind a [`TestServer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestStore {
    /// The in-memory store (`comet serve --memory`).
    Memory,
    /// The durable store (`comet serve`'s default), in a fresh directory
    /// removed when the server is dropped.
    Durable,
}

impl TestStore {
    /// The store the black-box suites run on: `COMET_TEST_STORE=memory` or
    /// `durable`; durable, what users run, when unset. The test script runs
    /// the server suites once with each.
    pub fn from_env() -> Self {
        match std::env::var("COMET_TEST_STORE").as_deref() {
            Ok("memory") => TestStore::Memory,
            Ok("durable") | Err(_) => TestStore::Durable,
            Ok(other) => panic!("COMET_TEST_STORE={other:?}: use memory or durable"),
        }
    }
}

/// A running server. Dropping it shuts the server down and waits for it.
pub struct TestServer {
    address: SocketAddr,
    hub: Hub,
    config: ServerConfig,
    rules: Rules,
    running: Option<Running>,
    store: TestStore,
    data_dir: Option<PathBuf>,
}

struct Running {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// Configures a [`TestServer`] before it starts.
pub struct TestServerBuilder {
    config: ServerConfig,
    retention: Retention,
    hub: HubConfig,
    store: TestStore,
    rules: Rules,
}

impl Default for TestServerBuilder {
    fn default() -> Self {
        Self {
            config: ServerConfig::default(),
            retention: Retention::default(),
            hub: HubConfig::default(),
            store: TestStore::from_env(),
            rules: Rules::default(),
        }
    }
}

impl TestServerBuilder {
    /// Changes the server configuration.
    pub fn config(mut self, change: impl FnOnce(&mut ServerConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// Caps connections at `max` (subscriptions get the share `comet
    /// serve` would give them).
    pub fn connections(self, max: usize) -> Self {
        let limits = ConnectionLimits::for_connections(max);
        self.config(|config| {
            config.max_connections = limits.max_connections;
            config.max_subscribers = limits.max_subscribers;
        })
    }

    /// Sets retention.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Retention by count alone: each channel keeps its newest `messages`,
    /// however old they are.
    pub fn keep_messages(self, messages: usize) -> Self {
        self.retention(Retention {
            max_messages: messages,
            max_age: None,
            ..Retention::default()
        })
    }

    /// Sets the live window.
    pub fn live_window(mut self, messages: usize) -> Self {
        self.hub.live_window = messages;
        self
    }

    /// Sets publish back-pressure.
    pub fn pace(mut self, pace: PaceConfig) -> Self {
        self.hub.pace = pace;
        self
    }

    /// Applies these authorization rules (by default: none configured,
    /// publishing from loopback).
    pub fn authorizer(mut self, authorizer: Authorizer) -> Self {
        self.rules = Rules::new(authorizer);
        self
    }

    /// Runs on `store` whatever the environment says.
    pub fn store(mut self, store: TestStore) -> Self {
        self.store = store;
        self
    }

    /// Starts the server; it accepts connections when this returns. The
    /// configuration goes through the same validation as `comet serve`'s.
    pub fn start(self) -> TestServer {
        if let Err(error) = self.config.validate() {
            panic!("invalid test server configuration: {error}");
        }
        let listener = comet_server::bind(([127, 0, 0, 1], 0).into()).expect("bind 127.0.0.1:0");
        let address = listener.local_addr().expect("bound address");
        let options = StoreOptions {
            retention: self.retention.clone(),
            ..StoreOptions::default()
        };
        let (store, data_dir): (Arc<dyn Store>, _) = match self.store {
            TestStore::Memory => (Arc::new(MemoryStore::new(options)), None),
            TestStore::Durable => {
                let dir = fresh_data_dir();
                let store = DiskStore::open(&dir, options).expect("open the durable store");
                (Arc::new(store), Some(dir))
            }
        };
        let hub = Hub::new(store, self.hub.within(&self.retention));
        let running = run(
            listener,
            hub.clone(),
            self.config.clone(),
            self.rules.clone(),
        );
        TestServer {
            address,
            hub,
            config: self.config,
            rules: self.rules,
            running: Some(running),
            store: self.store,
            data_dir,
        }
    }
}

/// A directory no other test server uses.
fn fresh_data_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "comet-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn run(listener: std::net::TcpListener, hub: Hub, config: ServerConfig, rules: Rules) -> Running {
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("comet-test-server".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("server runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let shutdown = async {
                    let _ = stopped.await;
                };
                // As `comet serve` does: retention by age applied every second.
                let sweeper = hub.clone();
                let sweeping = tokio::spawn(async move {
                    sweeper
                        .enforce_retention_every(Duration::from_secs(1))
                        .await;
                });
                Server::with_rules(hub, config, rules)
                    .expect("a validated configuration")
                    .serve(listener, shutdown)
                    .await
                    .expect("server runs");
                sweeping.abort();
            });
        })
        .expect("server thread");
    Running { stop, thread }
}

impl TestServer {
    /// A server with the default configuration.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// A server to configure first.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.address)
    }

    /// `base` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The rules it applies (replace them to change them while it runs).
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The store it runs on.
    pub fn store(&self) -> TestStore {
        self.store
    }

    /// Shuts the server down (every open stream ends, every connection
    /// closes) and starts it again on the same address with the same
    /// history: what clients see of a restart with a durable store.
    pub fn restart(&mut self) {
        self.stop();
        let listener = comet_server::bind(self.address).expect("bind the same address again");
        self.running = Some(run(
            listener,
            self.hub.clone(),
            self.config.clone(),
            self.rules.clone(),
        ));
    }

    fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(());
            let _ = running.thread.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.data_dir.take() {
            // The hub (and with it the store) may outlive the server in a
            // test's hands; the directory goes once nothing uses it.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
