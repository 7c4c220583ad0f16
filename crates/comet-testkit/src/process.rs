//! The real `comet` binary as a child process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `comet serve`. Killed when dropped.
pub struct ServerProcess {
    child: Child,
    base: String,
}

impl ServerProcess {
    /// Runs `binary serve --listen 127.0.0.1:0 ARGS…` and waits for its
    /// `listening on` line.
    pub fn spawn(binary: &Path, args: &[&str]) -> Self {
        Self::spawn_at(binary, "127.0.0.1:0", args)
    }

    /// Runs `binary serve --listen ADDRESS ARGS…` (to come back on the port
    /// of a server that stopped) and waits for its `listening on` line.
    pub fn spawn_at(binary: &Path, address: &str, args: &[&str]) -> Self {
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .args(["--listen", address])
            .args(args)
            .env("COMET_LOG", "error")
            .stderr(Stdio::inherit());
        Self::spawn_command(command)
    }

    /// Runs `command`, which must start `comet serve` (possibly through a
    /// wrapper such as `prlimit`), and waits for its `listening on` line.
    pub fn spawn_command(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the comet binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the first line");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from comet serve: {line:?}"))
            .to_string();
        Self { child, base }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the process, in bytes (from `/proc`).
    pub fn resident_bytes(&self) -> u64 {
        comet_bench::idle::resident_bytes(self.pid()).expect("VmRSS in /proc/PID/status")
    }

    /// Sends a signal (`KILL`, `STOP`, `CONT`, `TERM`, …) with `kill`;
    /// after `STOP`, returns once every thread of the server has stopped.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    /// Waits for the process to exit, failing after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "comet did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sends `signal` to the process `pid` with `kill`. After `STOP`, waits
/// until every thread of the process has stopped: `kill` returns before
/// they have, and a thread that was running goes on serving meanwhile.
pub(crate) fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
    if signal == "STOP" {
        wait_until_stopped(pid, Duration::from_secs(10));
    }
}

/// Waits until `/proc` shows every thread of `pid` stopped (state `T`),
/// failing after `limit`.
fn wait_until_stopped(pid: u32, limit: Duration) {
    let started = Instant::now();
    while !all_threads_stopped(pid) {
        assert!(
            started.elapsed() < limit,
            "process {pid} was sent SIGSTOP but a thread still runs after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether no thread of `pid` runs: each is stopped (`T`, `t`), or has
/// ended (`Z`, `X`, or gone from `/proc`). The state is the field after
/// the command name, which is in parentheses and may hold any character.
fn all_threads_stopped(pid: u32) -> bool {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list the threads in /proc");
    tasks.flatten().all(|task| {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            return true;
        };
        let state = stat
            .rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().next());
        matches!(state, Some("T" | "t" | "Z" | "X"))
    })
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
