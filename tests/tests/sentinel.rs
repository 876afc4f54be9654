//! Finding the master through Sentinel when the sentinels disagree or the
//! URL is wrong: votes are counted per distinct sentinel, an unknown master
//! name is a setting to fix (exit 2), not a failover to wait out, and a
//! connection leaves a master the sentinels no longer name within about a
//! second (the old master frozen, not killed, so no error ever tells it).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spool_queue::{Client, JobOptions};
use spool_testkit::{RedisSentinel, RedisServer, SENTINEL_MASTER, example_binary, free_port};

/// A sentinel of its own monitoring `master_port` under the usual master
/// name: a rogue (or stale) sentinel that names another master.
struct RogueSentinel {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RogueSentinel {
    fn start(master_port: u16) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\nsentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 1\n",
                dir.path().display()
            ),
        )?;
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start a sentinel")?;
        let started = Instant::now();
        while redis::Client::open(format!("redis://127.0.0.1:{port}"))?
            .get_connection()
            .is_err()
        {
            ensure!(
                started.elapsed() < Duration::from_secs(10),
                "rogue sentinel never answered"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(RogueSentinel {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Drop for RogueSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sentinels' ports from a testkit URL.
fn sentinel_ports(url: &str) -> Vec<u16> {
    url.trim_start_matches("redis+sentinel://")
        .split('/')
        .next()
        .unwrap_or_default()
        .split(',')
        .filter_map(|h| h.rsplit_once(':')?.1.parse().ok())
        .collect()
}

fn len_on(port: u16, key: &str) -> Result<i64> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))?.get_connection()?;
    Ok(redis::cmd("ZCARD").arg(key).query(&mut c)?)
}

/// One rogue sentinel listed three times beside two real ones: three
/// entries, but one vote. The real majority wins and the job lands on the
/// real master, not the rogue's.
#[tokio::test]
async fn a_sentinel_listed_many_times_has_one_vote() -> Result<()> {
    let set = RedisSentinel::start(1, 3)?;
    let real = sentinel_ports(&set.url());
    let rogue_master = RedisServer::start()?;
    let rogue = RogueSentinel::start(rogue_master.port())?;
    let url = format!(
        "redis+sentinel://127.0.0.1:{r},127.0.0.1:{r},127.0.0.1:{r},127.0.0.1:{a},127.0.0.1:{b}/{SENTINEL_MASTER}",
        r = rogue.port,
        a = real[0],
        b = real[1]
    );
    let q = Client::connect(&url).await?.queue("votes")?;
    q.enqueue(b"{}".to_vec(), JobOptions::default()).await?;
    let key = q.keys().ready.clone();
    ensure!(
        len_on(set.master_port()?, &key)? == 1,
        "the job is not on the real master"
    );
    ensure!(
        len_on(rogue_master.port(), &key)? == 0,
        "the rogue's master got the job"
    );
    Ok(())
}

/// A master name no sentinel knows: `spoolctl` and a worker exit 2 at
/// start, naming SPOOL_REDIS_URL, instead of retrying a "failover" forever.
#[tokio::test]
async fn an_unknown_master_name_is_a_bad_setting() -> Result<()> {
    let set = RedisSentinel::start(1, 3)?;
    let url = set.url().replace(SENTINEL_MASTER, "nosuchmaster");
    let spoolctl = spool_testkit::workspace_binary("spoolctl", "spoolctl")?;
    let t = Instant::now();
    let out = Command::new(&spoolctl)
        .args(["stats"])
        .env("SPOOL_REDIS_URL", &url)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(2), "{:?}: {err}", out.status);
    ensure!(
        err.contains("nosuchmaster") && err.contains("SPOOL_REDIS_URL"),
        "{err}"
    );
    println!("spoolctl refused it in {:?}", t.elapsed());
    let bin = example_binary("spool-worker", "sleep_worker")?;
    let t = Instant::now();
    let mut w = spool_testkit::WorkerProcess::spawn(&bin, &url, &[("SPOOL_QUEUE", "x")])?;
    let status = w.wait_exit(Duration::from_secs(30))?;
    println!("the worker exited in {:?}", t.elapsed());
    ensure!(status.code() == Some(2), "{status}:\n{}", w.log());
    ensure!(w.log().contains("nosuchmaster"), "{}", w.log());
    Ok(())
}

/// The master frozen (SIGSTOP, as a partition would) until the sentinels
/// promote its replica: a client that keeps writing moves to the new master
/// within seconds of the promotion, though its old connection never failed
/// (the old master is still frozen, so no write of the client can reach it
/// once it has moved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaves_a_frozen_master_once_the_sentinels_name_another() -> Result<()> {
    let mut set = RedisSentinel::start(1, 3)?;
    let client = Client::connect(&set.url()).await?;
    let q = client.queue("frozen")?;
    q.enqueue(b"{}".to_vec(), JobOptions::default()).await?;
    let old = set.master_port()?;
    set.node_mut(old)?.pause()?;
    let frozen = Instant::now();
    let new = loop {
        if let Ok(p) = set.master_port()
            && p != old
        {
            break p;
        }
        ensure!(
            frozen.elapsed() < Duration::from_secs(60),
            "no promotion in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let promoted = frozen.elapsed();
    // Writes now: retried until one is acknowledged, as a producer would.
    let t = Instant::now();
    loop {
        match tokio::time::timeout(
            Duration::from_secs(15),
            q.enqueue(b"{}".to_vec(), JobOptions::default().id("after")),
        )
        .await
        {
            Ok(Ok(_)) => break,
            _ => ensure!(
                t.elapsed() < Duration::from_secs(30),
                "no write acknowledged in 30 s"
            ),
        }
    }
    let moved = t.elapsed();
    set.node_mut(old)?.resume()?;
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{new}"))?.get_connection()?;
    let on_new: bool = redis::cmd("EXISTS")
        .arg(q.keys().job("after"))
        .query(&mut c)?;
    ensure!(on_new, "the acknowledged write is not on the new master");
    println!(
        "promoted {promoted:?} after the freeze; the client wrote to the new master {moved:?} after"
    );
    Ok(())
}
