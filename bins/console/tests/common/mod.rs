//! What the console's test files share: the console as a child process on
//! a free loopback port, logging to a file the test can read.

#![allow(dead_code)]

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spool_testkit::{RedisServer, WorkerProcess, example_binary, free_port};

/// The admin token the tests give a console with tokens.
pub(crate) const ADMIN: &str = "admin-token-0123456789abcdef";
/// The read token.
pub(crate) const READ: &str = "read-token-0123456789abcdef";

/// A running `spool-console`, killed when dropped.
pub(crate) struct Console {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) base: String,
    pub(crate) log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a console on `redis_url` with the given tokens (none: the
/// loopback-only mode) and extra environment, and waits until it listens.
pub(crate) fn console(
    redis_url: &str,
    admin: Option<&str>,
    read: Option<&str>,
    env: &[(&str, &str)],
) -> Result<Console> {
    let port = free_port()?;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("console.log");
    let out = std::fs::File::create(&log)?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spool-console"));
    cmd.env("SPOOL_REDIS_URL", redis_url)
        .env("SPOOL_CONSOLE_ADDR", format!("127.0.0.1:{port}"))
        .env_remove("SPOOL_CONSOLE_TOKEN")
        .env_remove("SPOOL_CONSOLE_READ_TOKEN")
        .stdout(out.try_clone()?)
        .stderr(out);
    if let Some(t) = admin {
        cmd.env("SPOOL_CONSOLE_TOKEN", t);
    }
    if let Some(t) = read {
        cmd.env("SPOOL_CONSOLE_READ_TOKEN", t);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn()?;
    let c = Console {
        child,
        port,
        base: format!("http://127.0.0.1:{port}"),
        log,
        _dir: dir,
    };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            start.elapsed() < Duration::from_secs(20),
            "the console never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Listening comes before the first connection to Redis: on a busy
    // machine a request in between is answered 503 "has not reached Redis
    // yet". When Redis is up, wait for the console to reach it (a test that
    // starts the console before Redis checks that 503 itself).
    let redis_addr = redis_url
        .split("//")
        .nth(1)
        .and_then(|rest| rest.split(['/', '?']).next())
        .map(|hostport| hostport.rsplit('@').next().unwrap_or(hostport).to_owned());
    if redis_addr.is_some_and(|a| std::net::TcpStream::connect(a.as_str()).is_ok()) {
        loop {
            let ok = healthz_ok(port);
            if ok {
                break;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(20),
                "the console never reached Redis"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(c)
}

/// One raw HTTP/1.1 request; the status and the whole answer.
pub(crate) fn raw(port: u16, request: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(request.as_bytes())?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in {text:?}"))?;
    Ok((status, text))
}

/// Whether the console on `port` answers `/healthz` with 200 (it reaches
/// Redis).
fn healthz_ok(port: u16) -> bool {
    let request =
        format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    matches!(raw(port, &request), Ok((200, _)))
}

/// A real `sleep_worker` on `queue` (2 s leases, sweeping every 200 ms),
/// ready to take jobs.
pub(crate) fn sleep_worker(redis: &RedisServer, queue: &str) -> Result<WorkerProcess> {
    let bin = example_binary("spool-worker", "sleep_worker")?;
    let mut w = WorkerProcess::spawn(
        std::path::Path::new(&bin),
        &redis.url(),
        &[
            ("SPOOL_QUEUE", queue),
            ("SPOOL_LEASE", "2s"),
            ("SPOOL_SWEEP_INTERVAL", "200ms"),
        ],
    )?;
    w.wait_ready(Duration::from_secs(60))?;
    Ok(w)
}
