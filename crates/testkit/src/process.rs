//! Worker processes for cross-process tests: spawn a binary with `SPOOL_*`
//! settings, talk to its HTTP endpoints, and signal it as the kubelet would.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::{Error, Result, free_port};

/// Builds an example of a workspace package once per test process and returns
/// its path (`cargo test` builds examples, nextest may not).
pub fn example_binary(package: &str, example: &str) -> Result<PathBuf> {
    build_once(
        &["-p", package, "--example", example],
        &format!("debug/examples/{example}"),
    )
}

/// [`example_binary`] built with `--release`, for benchmarks.
pub fn example_binary_release(package: &str, example: &str) -> Result<PathBuf> {
    build_once(
        &["--release", "-p", package, "--example", example],
        &format!("release/examples/{example}"),
    )
}

/// Builds a binary of another workspace package (a test's own package binary
/// is `env!("CARGO_BIN_EXE_<name>")`) and returns its path.
pub fn workspace_binary(package: &str, bin: &str) -> Result<PathBuf> {
    build_once(&["-p", package, "--bin", bin], &format!("debug/{bin}"))
}

/// [`workspace_binary`] built with `--release`, for benchmarks.
pub fn workspace_binary_release(package: &str, bin: &str) -> Result<PathBuf> {
    build_once(
        &["--release", "-p", package, "--bin", bin],
        &format!("release/{bin}"),
    )
}

fn build_once(args: &[&str], artefact: &str) -> Result<PathBuf> {
    static BUILT: OnceLock<
        std::sync::Mutex<HashMap<String, std::result::Result<PathBuf, String>>>,
    > = OnceLock::new();
    let key = args.join(" ");
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    built
        .entry(key)
        .or_insert_with(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = Command::new(cargo)
                .arg("build")
                .args(args)
                .stdout(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cargo build {}: failed:\n{}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
            Ok(target.join(artefact))
        })
        .clone()
        .map_err(Error)
}

/// A running worker process with its metrics port.
#[derive(Debug)]
pub struct WorkerProcess {
    child: Option<Child>,
    /// Where its `/metrics`, `/healthz` and `/readyz` answer.
    pub metrics_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl WorkerProcess {
    /// Starts `binary` with `SPOOL_REDIS_URL=redis_url`, a free
    /// `SPOOL_METRICS_ADDR` on 127.0.0.1, and `env` on top. Logs go to a file
    /// that [`WorkerProcess::log`] reads.
    pub fn spawn(binary: &Path, redis_url: &str, env: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(|e| Error(format!("temp dir: {e}")))?;
        let log = dir.path().join("worker.log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| Error(format!("cannot create log: {e}")))?;
        let metrics_port = free_port()?;
        let mut vars: HashMap<String, String> = HashMap::from([
            ("SPOOL_REDIS_URL".into(), redis_url.into()),
            (
                "SPOOL_METRICS_ADDR".into(),
                format!("127.0.0.1:{metrics_port}"),
            ),
            ("RUST_LOG".into(), "info".into()),
        ]);
        for (k, v) in env {
            vars.insert((*k).into(), (*v).into());
        }
        let child = Command::new(binary)
            .envs(vars)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| Error(format!("cannot start {}: {e}", binary.display())))?;
        Ok(WorkerProcess {
            child: Some(child),
            metrics_port,
            log,
            _dir: dir,
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on the metrics port: (status, body).
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.metrics_port, path)
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = self.get("/readyz") {
                return Ok(());
            }
            if let Some(status) = self.try_wait()? {
                return Err(Error(format!(
                    "worker exited ({status}) before ready:\n{}",
                    self.log()
                )));
            }
            if start.elapsed() > timeout {
                return Err(Error(format!(
                    "worker not ready after {timeout:?}:\n{}",
                    self.log()
                )));
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, sig: &str) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| Error("worker already reaped".into()))?;
        let status = Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .map_err(|e| Error(format!("cannot run kill: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(Error(format!("kill -{sig} {pid}: {status}")))
        }
    }

    /// The exit status if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map_err(|e| Error(format!("wait: {e}"))),
            None => Ok(None),
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
            if start.elapsed() > timeout {
                return Err(Error(format!(
                    "worker still running after {timeout:?}:\n{}",
                    self.log()
                )));
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs it and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.1 GET against 127.0.0.1:`port`: (status, body).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .map_err(|e| Error(format!("connect :{port}: {e}")))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| Error(e.to_string()))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| Error(format!("send: {e}")))?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)
        .map_err(|e| Error(format!("read: {e}")))?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| Error(format!("not an HTTP answer: {buf:?}")))?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Reads a metric's value from Prometheus text: the first sample whose name is
/// `name` and whose labels include every `labels` pair.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, r.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            if ok { value.parse().ok() } else { None }
        })
}
