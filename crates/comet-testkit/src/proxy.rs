//! A TCP proxy that loses answers: what a publisher sees when a connection
//! drops after the server acted but before its answer arrived.
//!
//! Requests always reach the server. Each piece of the server's answer is,
//! by the proxy's [`Losing`] mode, passed on or lost: when it is lost, both
//! connections are closed and the client learns nothing of the outcome.
//! Which answers are lost under [`Losing::Half`] is decided by a seeded
//! generator: the same run of requests loses the same answers.
//!
//! Its upstream can be changed while it runs ([`AnswerLosingProxy::route_to`]):
//! new connections go to the new one, as a load balancer moves clients off
//! a node that died.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which answers the proxy loses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Losing {
    /// None: a plain proxy.
    Nothing,
    /// About half of them.
    Half,
    /// Every one.
    Everything,
}

struct Shared {
    upstream: Mutex<SocketAddr>,
    mode: AtomicU8,
    lost: AtomicU64,
    /// The generator's state (xorshift64).
    state: AtomicU64,
}

impl Shared {
    fn loses_this_answer(&self) -> bool {
        match self.mode.load(Ordering::SeqCst) {
            0 => false,
            2 => true,
            _ => {
                let mut x = self.state.load(Ordering::SeqCst);
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                self.state.store(x, Ordering::SeqCst);
                x & 1 == 1
            }
        }
    }
}

/// A running proxy, on `127.0.0.1:0`, in front of `upstream`. Stops when
/// dropped.
pub struct AnswerLosingProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    accepting: tokio::task::JoinHandle<()>,
}

impl AnswerLosingProxy {
    /// Starts a proxy to `upstream`, losing answers by `mode`.
    pub async fn start(upstream: SocketAddr, mode: Losing) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            mode: AtomicU8::new(0),
            lost: AtomicU64::new(0),
            state: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        });
        let proxy = Self {
            address,
            shared: shared.clone(),
            accepting: tokio::spawn(accept(listener, shared)),
        };
        proxy.lose(mode);
        proxy
    }

    /// Where clients connect.
    pub fn base(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Changes which answers are lost from now on.
    pub fn lose(&self, mode: Losing) {
        let value = match mode {
            Losing::Nothing => 0,
            Losing::Half => 1,
            Losing::Everything => 2,
        };
        self.shared.mode.store(value, Ordering::SeqCst);
    }

    /// Sends new connections to `upstream` from now on (open ones stay
    /// where they are).
    pub fn route_to(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().unwrap() = upstream;
    }

    /// Answers lost so far.
    pub fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::SeqCst)
    }
}

impl Drop for AnswerLosingProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(relay(client, shared.clone()));
    }
}

/// Relays one connection until either side closes or an answer is lost.
async fn relay(mut client: TcpStream, shared: Arc<Shared>) {
    let upstream = *shared.upstream.lock().unwrap();
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.split();
    let (mut from_server, mut to_server) = server.split();
    let mut request = vec![0; 16 * 1024];
    let mut answer = vec![0; 16 * 1024];
    loop {
        tokio::select! {
            read = from_client.read(&mut request) => match read {
                Ok(n) if n > 0 => {
                    if to_server.write_all(&request[..n]).await.is_err() {
                        return;
                    }
                }
                _ => return,
            },
            read = from_server.read(&mut answer) => match read {
                Ok(n) if n > 0 => {
                    if shared.loses_this_answer() {
                        shared.lost.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    if to_client.write_all(&answer[..n]).await.is_err() {
                        return;
                    }
                }
                _ => return,
            },
        }
    }
}
