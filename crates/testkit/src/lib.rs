//! Throwaway `redis-server` processes for spool's tests.
//!
//! Tests talk to real Redis, never a mock: each [`RedisServer`] runs on a free
//! loopback port with its data in a temporary directory, AOF on with
//! `appendfsync always` (so a SIGKILL loses nothing acknowledged), and is killed
//! when dropped. Tests can [`RedisServer::kill`] it with SIGKILL and
//! [`RedisServer::restart`] it on the same port and data, or pause it with
//! SIGSTOP to simulate a network partition. [`RedisCluster`] starts a
//! three-master Redis Cluster the same way.
//!
//! The `redis-test` crate spawns servers too, but cannot restart one on the same
//! port and AOF or pause it, which the fault tests need; this crate is the small
//! part it lacks, written against the same ideas (free ports, temp dirs, PING
//! until ready).

mod process;
mod record;

pub use process::{WorkerProcess, example_binary, http_get, metric_value, workspace_binary};
pub use record::{Event, Record};

use std::fmt;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a server may take to answer PING after it was spawned. Loading an
/// AOF of a few hundred thousand jobs takes well under this on the CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a cluster may take to agree on its slots.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries at a free port: another process may take the one we picked between
/// our probe and Redis's bind.
const PORT_TRIES: usize = 5;

/// A testkit failure, with a message that says what to do.
#[derive(Debug)]
pub struct Error(pub(crate) String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// The testkit's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Set (to anything but `0`) where every test must run: `.ci/run` sets it,
/// because CI machines have promtool and can mount a tmpfs.
pub const REQUIRE_ALL_ENV: &str = "SPOOL_REQUIRE_ALL_TESTS";

/// A test that cannot run here says so: it prints `SKIPPED: <why>` and
/// passes, unless [`REQUIRE_ALL_ENV`] is set, where it fails with the reason.
pub fn skipped(why: &str) -> Result<()> {
    if std::env::var(REQUIRE_ALL_ENV).is_ok_and(|v| v != "0") {
        return Err(err(format!(
            "{why}; {REQUIRE_ALL_ENV} is set, so this check must run here"
        )));
    }
    eprintln!("SKIPPED: {why}");
    Ok(())
}

fn err(msg: impl Into<String>) -> Error {
    Error(msg.into())
}

/// A free TCP port on 127.0.0.1 (free when probed).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| err(format!("no free port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| err(format!("no free port: {e}")))
}

/// Extra `redis-server` arguments, e.g. for TLS or ACL tests.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Appended to the command line as they are (`["--requirepass", "x"]`).
    pub extra_args: Vec<String>,
    /// Start with cluster mode enabled.
    pub cluster: bool,
    /// When set, the server listens on this port with TLS and on no plain port;
    /// the caller passes the certificate arguments in `extra_args`.
    pub tls: bool,
    /// `requirepass`: the default user's password (in [`RedisServer::url`] too).
    pub password: Option<String>,
}

/// A `redis-server` child process on a loopback port.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    options: ServerOptions,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server with AOF on (`appendfsync always`).
    pub fn start() -> Result<Self> {
        Self::start_with(ServerOptions::default())
    }

    /// Starts a server with extra options.
    pub fn start_with(options: ServerOptions) -> Result<Self> {
        let mut last = None;
        for _ in 0..PORT_TRIES {
            let dir = tempfile::Builder::new()
                .prefix("spool-redis-")
                .tempdir()
                .map_err(|e| err(format!("cannot create a temp dir for redis-server: {e}")))?;
            let mut server = RedisServer {
                port: free_port()?,
                dir,
                options: options.clone(),
                child: None,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| err("redis-server did not start")))
    }

    fn spawn(&mut self) -> Result<()> {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.current_dir(self.dir.path())
            .args(["--bind", "127.0.0.1", "--daemonize", "no", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(["--logfile", "redis.log"]);
        if self.options.tls {
            cmd.args(["--port", "0", "--tls-port", &port]);
        } else {
            cmd.args(["--port", &port]);
        }
        if self.options.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
        }
        if let Some(pw) = &self.options.password {
            cmd.arg("--requirepass").arg(pw);
        }
        cmd.args(&self.options.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                err(
                    "redis-server is not installed (not on PATH): install it with \
                     `sudo apt-get install redis-server` on Debian/Ubuntu or \
                     `brew install redis` on macOS, then rerun the tests",
                )
            } else {
                err(format!("cannot spawn redis-server: {e}"))
            }
        })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(err(format!(
                    "redis-server exited at start ({status}); its log says:\n{}",
                    self.log_tail()
                )));
            }
            if self.options.tls {
                // No TLS client here: an open port is the best sign of life.
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    sleep(Duration::from_millis(50));
                    return Ok(());
                }
            } else if self.ping().is_ok() {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(err(format!(
                    "redis-server on port {} did not answer within {START_TIMEOUT:?}; log:\n{}",
                    self.port,
                    self.log_tail()
                )));
            }
            sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> redis::RedisResult<()> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
        let _: String = redis::cmd("PING").query(&mut conn)?;
        Ok(())
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `redis://127.0.0.1:<port>` (with `:password@` when one is required).
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "rediss" } else { "redis" };
        let auth = self
            .options
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        format!("{scheme}://{auth}127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (AOF, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A blocking client connection, for assertions.
    pub fn connection(&self) -> Result<redis::Connection> {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .map_err(|e| err(format!("cannot connect to test redis {}: {e}", self.url())))
    }

    /// Kills the server with SIGKILL, as an OOM-kill or node loss would.
    pub fn kill(&mut self) {
        self.stop_child();
    }

    /// Starts the server again on the same port and data directory (replaying
    /// its AOF). Call after [`RedisServer::kill`].
    pub fn restart(&mut self) -> Result<()> {
        self.stop_child();
        self.spawn()
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers,
    /// as in a network partition. [`RedisServer::resume`] undoes it.
    pub fn pause(&self) -> Result<()> {
        self.signal("STOP")
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) -> Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, sig: &str) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| err("redis-server is not running"))?;
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .map_err(|e| err(format!("cannot run kill: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(err(format!("kill -{sig} {pid} failed: {status}")))
        }
    }

    fn stop_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = self.resume_pid(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn resume_pid(&self, pid: u32) -> std::io::Result<std::process::ExitStatus> {
        Command::new("kill")
            .args(["-CONT", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop_child();
    }
}

/// Slots in a Redis Cluster.
const CLUSTER_SLOTS: u16 = 16384;

/// A Redis Cluster of `n` masters (no replicas) on loopback ports.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` nodes, splits the slots evenly between them, joins
    /// them, and waits until every node reports `cluster_state:ok`.
    pub fn start(masters: usize) -> Result<Self> {
        let nodes = (0..masters.max(1))
            .map(|_| {
                RedisServer::start_with(ServerOptions {
                    cluster: true,
                    ..ServerOptions::default()
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let per = CLUSTER_SLOTS as usize / nodes.len();
        let redis_err = |e: redis::RedisError| err(format!("cluster setup failed: {e}"));
        for (i, node) in nodes.iter().enumerate() {
            let first = i * per;
            let last = if i + 1 == nodes.len() {
                CLUSTER_SLOTS as usize - 1
            } else {
                first + per - 1
            };
            let mut c = node.connection()?;
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last)
                .query(&mut c)
                .map_err(redis_err)?;
        }
        let mut first = nodes[0].connection()?;
        for node in &nodes[1..] {
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(node.port())
                .query(&mut first)
                .map_err(redis_err)?;
        }
        let started = Instant::now();
        loop {
            let mut ok = true;
            for node in &nodes {
                let mut c = node.connection()?;
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut c)
                    .map_err(redis_err)?;
                let known = info
                    .lines()
                    .find_map(|l| l.strip_prefix("cluster_known_nodes:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                ok &= info.contains("cluster_state:ok") && known == nodes.len();
            }
            if ok {
                return Ok(RedisCluster { nodes });
            }
            if started.elapsed() > CLUSTER_TIMEOUT {
                return Err(err(
                    "the test cluster did not reach cluster_state:ok in time",
                ));
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// The seed URLs, comma-separated (the form `spool_queue::Client` takes).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The port of the master that serves `key`.
    pub fn port_for_key(&self, key: &str) -> Result<u16> {
        let mut c = self.nodes[0].connection()?;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut c)
            .map_err(|e| err(format!("CLUSTER KEYSLOT failed: {e}")))?;
        let per = CLUSTER_SLOTS as usize / self.nodes.len();
        let i = (slot as usize / per).min(self.nodes.len() - 1);
        Ok(self.nodes[i].port())
    }
}

/// The directory where test artefacts (timelines, plots) go: `target/spool-tests`.
pub fn artefact_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = base.join("spool-tests");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_survives_sigkill_with_its_data() -> Result<()> {
        let mut server = RedisServer::start()?;
        let mut c = server.connection()?;
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query(&mut c)
            .map_err(|e| err(e.to_string()))?;
        server.kill();
        assert!(
            server.connection().is_err(),
            "a killed server must not answer"
        );
        server.restart()?;
        let mut c = server.connection()?;
        let v: String = redis::cmd("GET")
            .arg("k")
            .query(&mut c)
            .map_err(|e| err(e.to_string()))?;
        assert_eq!(v, "v");
        Ok(())
    }
}

/// Runs an external tool to completion; a missing tool or a failure becomes
/// an error that says what to install or what the tool printed.
fn run_tool(cmd: &mut Command, install_hint: &str) -> Result<()> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .map_err(|e| err(format!("{name} is needed ({install_hint}): {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(format!(
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// A CA and a server certificate for 127.0.0.1, made with the `openssl` CLI.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate (PEM) clients trust.
    pub ca: PathBuf,
    /// The server certificate (PEM), signed by the CA.
    pub cert: PathBuf,
    /// The server key (PEM).
    pub key: PathBuf,
}

/// Makes a fresh CA and a server certificate under `dir`.
pub fn make_tls(dir: &Path) -> Result<TlsFiles> {
    let run = |args: &[&str]| {
        run_tool(
            Command::new("openssl").args(args).current_dir(dir),
            "apt-get install openssl",
        )
    };
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .map_err(|e| err(e.to_string()))?;
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=spool test CA",
    ])?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ])?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext",
    ])?;
    Ok(TlsFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    })
}

impl RedisServer {
    /// Starts a server that speaks only TLS, with `files`' certificate.
    pub fn start_tls(files: &TlsFiles) -> Result<Self> {
        let s = |p: &Path| p.display().to_string();
        RedisServer::start_with(ServerOptions {
            tls: true,
            extra_args: vec![
                "--tls-cert-file".into(),
                s(&files.cert),
                "--tls-key-file".into(),
                s(&files.key),
                "--tls-ca-cert-file".into(),
                s(&files.ca),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            ..ServerOptions::default()
        })
    }
}

#[cfg(test)]
mod password_tests {
    use super::*;

    #[test]
    fn a_password_protected_server_starts_and_answers() -> Result<()> {
        let s = RedisServer::start_with(ServerOptions {
            password: Some("pw-1".into()),
            ..Default::default()
        })?;
        assert!(s.url().contains(":pw-1@"));
        s.connection()?;
        Ok(())
    }
}

/// Writes a test clip made by the `ffmpeg` CLI from FFmpeg's lavfi sources: a
/// `testsrc2` pattern of `w`×`h` at `fps`, with a 440 Hz tone in AAC, H.264
/// in MP4 (or whatever `path`'s extension asks for).
pub fn lavfi_clip(path: &Path, w: u32, h: u32, fps: u32, secs: u32) -> Result<()> {
    run_tool(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size={w}x{h}:rate={fps}:duration={secs}"))
            .args(["-f", "lavfi", "-i"])
            .arg(format!(
                "sine=frequency=440:sample_rate=48000:duration={secs}"
            ))
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-c:a", "aac", "-shortest"])
            .arg(path),
        "scripts/deps.sh installs the ffmpeg CLI",
    )
}
