//! A real `redis-server` (Debian's package) on a free loopback port, with a
//! directory of its own; stopped and removed when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl RedisServer {
    /// Starts one without persistence.
    pub fn start() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// Starts one with these extra arguments (`--appendonly yes`, …).
    pub fn start_with(args: &[&str]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "comet-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        for _ in 0..5 {
            let port = free_port();
            let mut child = spawn(port, &dir, &args);
            if answers_ping(port, Duration::from_secs(10)) {
                return Self {
                    child,
                    port,
                    dir,
                    args,
                };
            }
            // The port was taken between looking and binding: another one.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
    }

    /// Starts one that speaks only TLS, with a certificate for 127.0.0.1
    /// signed by a CA of its own (`ca.pem` in [`dir`](Self::dir)), made
    /// with `openssl`.
    pub fn start_tls() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "comet-redis-tls-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for the certificates");
        make_certificates(&dir);
        let file = |name: &str| dir.join(name).to_str().expect("a UTF-8 path").to_string();
        let port = free_port();
        let args: Vec<String> = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &file("server.pem"),
            "--tls-key-file",
            &file("server.key"),
            "--tls-ca-cert-file",
            &file("ca.pem"),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--dir", &file("")])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server (TLS) did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            child,
            port,
            dir,
            args: Vec::new(),
        }
    }

    /// Its directory (for a TLS one, where `ca.pem` is).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Kills it (`SIGKILL`): what it had not written to disk is lost.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again after [`kill`](Self::kill), on the same port with
    /// the same directory (and so whatever it persisted there).
    pub fn start_again(&mut self) {
        self.child = spawn(self.port, &self.dir, &self.args);
        assert!(
            answers_ping(self.port, Duration::from_secs(10)),
            "redis-server did not start again"
        );
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends it a signal (`STOP` pauses it, `CONT` resumes it) with `kill`;
    /// after `STOP`, returns once every thread of it has stopped.
    pub fn signal(&self, signal: &str) {
        crate::process::send_signal(self.pid(), signal);
    }

    /// Sends one command (`["FLUSHALL"]`, `["CONFIG", "SET", …]`) and
    /// returns the first line of its answer (`+OK`, `-ERR …`, `:1`, …).
    pub fn command(&self, words: &[&str]) -> String {
        let mut request = format!("*{}\r\n", words.len());
        for word in words {
            request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
        }
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a read timeout");
        stream.write_all(request.as_bytes()).expect("send to redis");
        let mut answer = Vec::new();
        let mut byte = [0];
        while stream.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
            answer.push(byte[0]);
        }
        String::from_utf8_lossy(&answer).trim_end().to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(port: u16, dir: &std::path::Path, args: &[String]) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--dir", dir.to_str().expect("a UTF-8 path")])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start redis-server (Debian's redis-server package; scripts/test.sh installs it)")
}

/// A CA (`ca.pem`) and a certificate it signed for 127.0.0.1
/// (`server.pem`, `server.key`) in `dir`.
fn make_certificates(dir: &std::path::Path) {
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("write san.cnf");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=comet test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        "-out",
        "server.pem",
    ]);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Whether something on `port` answers `PING` with `+PONG` within `limit`.
fn answers_ping(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut answer = [0; 7];
            if stream.write_all(b"PING\r\n").is_ok()
                && stream.read_exact(&mut answer).is_ok()
                && &answer == b"+PONG\r\n"
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}
