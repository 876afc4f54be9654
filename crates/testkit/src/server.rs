//! A single `redis-server` on a free loopback port: start, SIGKILL, restart on
//! the same AOF, SIGSTOP/SIGCONT, and a password when asked.

use crate::*;

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
#[derive(Debug)]
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

    /// Restarts the server on its data as a replica of the node on
    /// `master_port` (on loopback): how a failed master must come back under
    /// Sentinel (docs/operations.md), never as a master with its own,
    /// possibly older, data set.
    pub fn restart_as_replica_of(&mut self, master_port: u16) -> Result<()> {
        let args = &mut self.options.extra_args;
        if let Some(i) = args.iter().position(|a| a == "--replicaof") {
            args.drain(i..(i + 3).min(args.len()));
        }
        args.extend([
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            master_port.to_string(),
        ]);
        self.restart()
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
