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

mod cluster;
mod faults;
mod media;
mod process;
mod record;
mod s3;
mod sentinel;
mod server;
mod tls;

pub use cluster::RedisCluster;
pub use faults::{Fault, FaultProxy, Gate, Rule};
pub use media::{
    Tmpfs, chunk_source, decode_errors, decoded_frames, ffmpeg, lavfi_clip, lavfi_video,
    packet_md5s, packets, psnr_per_frame, stream_times,
};
pub use s3::{PUBLIC_BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY, S3Server, weed_binary};
pub use sentinel::{RedisSentinel, SENTINEL_MASTER};
pub use server::{RedisServer, ServerOptions};
pub use tls::{TlsFiles, make_tls};

pub use process::{
    WorkerProcess, example_binary, example_binary_release, http_get, metric_value,
    workspace_binary, workspace_binary_release,
};
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

/// Waits, in an async test, until `ok` says yes, asking every 20 ms; fails
/// with what it waited for once `timeout` passes. `ok`'s own error ends the
/// wait at once.
pub async fn wait_for(
    what: &str,
    timeout: Duration,
    mut ok: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !ok().await? {
        if start.elapsed() > timeout {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (free when probed).
///
/// Ports come from 20000..32000, below Linux's ephemeral range (32768 and
/// up): a server the test kills and restarts on the same port (Redis on its
/// AOF, SeaweedFS) would otherwise find it taken, now and then, by some
/// process's outgoing connection in the meantime ("address already in use").
pub fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    // Each process starts at its own place in the range (its pid and the
    // clock), so parallel test processes rarely try the same ports.
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let _ = NEXT.compare_exchange(0, seed % SPAN + 1, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| err(format!("no free port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| err(format!("no free port: {e}")))
}

/// Slots in a Redis Cluster.
const CLUSTER_SLOTS: u16 = 16384;

/// The directory where test artefacts (timelines, plots) go: `target/spool-tests`.
pub fn artefact_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = base.join("spool-tests");
    let _ = std::fs::create_dir_all(&dir);
    dir
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
