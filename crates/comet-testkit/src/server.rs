//! The real server, in-process, on an ephemeral loopback port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use comet_hub::{Hub, HubConfig};
use comet_server::{Server, ServerConfig};
use comet_store::{MemoryStore, Retention, StoreOptions};
use tokio::sync::oneshot;

/// A running server. Dropping it shuts the server down and waits for it.
pub struct TestServer {
    address: SocketAddr,
    hub: Hub,
    config: ServerConfig,
    running: Option<Running>,
}

struct Running {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// Configures a [`TestServer`] before it starts.
#[derive(Default)]
pub struct TestServerBuilder {
    config: ServerConfig,
    retention: Retention,
    hub: HubConfig,
}

impl TestServerBuilder {
    /// Changes the server configuration.
    pub fn config(mut self, change: impl FnOnce(&mut ServerConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// Sets retention.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Sets the live window.
    pub fn live_window(mut self, messages: usize) -> Self {
        self.hub.live_window = messages;
        self
    }

    /// Starts the server; it accepts connections when this returns.
    pub fn start(self) -> TestServer {
        let listener = comet_server::bind(([127, 0, 0, 1], 0).into()).expect("bind 127.0.0.1:0");
        let address = listener.local_addr().expect("bound address");
        let store = Arc::new(MemoryStore::new(StoreOptions {
            retention: self.retention.clone(),
            ..StoreOptions::default()
        }));
        let hub = Hub::new(store, self.hub.within(&self.retention));
        let running = run(listener, hub.clone(), self.config.clone());
        TestServer {
            address,
            hub,
            config: self.config,
            running: Some(running),
        }
    }
}

fn run(listener: std::net::TcpListener, hub: Hub, config: ServerConfig) -> Running {
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
                Server::new(hub, config)
                    .serve(listener, shutdown)
                    .await
                    .expect("server runs");
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

    /// Shuts the server down (every open stream ends, every connection
    /// closes) and starts it again on the same address with the same
    /// history: what clients see of a restart with a durable store.
    pub fn restart(&mut self) {
        self.stop();
        let listener = comet_server::bind(self.address).expect("bind the same address again");
        self.running = Some(run(listener, self.hub.clone(), self.config.clone()));
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
    }
}
