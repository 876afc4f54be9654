//! Worker-runtime overhead: the runtime's end-to-end rate with no-op handlers
//! (concurrency 64) as a ratio of the bare queue API's in the same run, the
//! enqueue-to-handler-start latency of an idle worker, and an idle worker
//! process's resident memory.
//!
//! `cargo bench -p spool-benches --bench worker`. Settings: `SPOOL_BENCH_JOBS`
//! (default 20000), `SPOOL_BENCH_SAMPLES` (latency samples, 300).
//! Targets (issue 3): ratio at least 0.8, p99 under 5 ms, idle RSS under 20 MB.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spool_benches::setting;
use spool_queue::{Client, NewJob, Queue, Settle};
use spool_testkit::{RedisServer, ServerOptions, WorkerProcess};
use spool_worker::{Handler, JobContext, JobError, Worker};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const CONCURRENCY: usize = 64;

/// Does nothing but say when it started.
struct Noop {
    started: Option<mpsc::UnboundedSender<Instant>>,
}

impl Handler for Noop {
    type Payload = serde_json::Value;
    async fn handle(
        &self,
        _: serde_json::Value,
        _: JobContext,
    ) -> Result<Option<serde_json::Value>, JobError> {
        if let Some(tx) = &self.started {
            let _ = tx.send(Instant::now());
        }
        Ok(None)
    }
}

async fn fill(q: &Queue, n: usize) -> Result<()> {
    let jobs = (0..n).map(|_| NewJob::new(b"{}".to_vec())).collect();
    q.enqueue_batch(jobs).await?;
    Ok(())
}

async fn wait_completed(q: &Queue, n: u64) -> Result<()> {
    while q.stats().await?.completed < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let n = setting("SPOOL_BENCH_JOBS", 20_000);
    let samples = setting("SPOOL_BENCH_SAMPLES", 300);
    let server = RedisServer::start_with(ServerOptions {
        extra_args: vec!["--appendfsync".into(), "everysec".into()],
        ..ServerOptions::default()
    })?;
    let client = Client::connect(&server.url()).await?;

    // Bare API: one consumer reserving up to 64 and completing them in one call.
    let bare = client.queue("bare")?;
    fill(&bare, n).await?;
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        let jobs = bare.reserve(CONCURRENCY, Duration::from_secs(1)).await?;
        ensure!(!jobs.is_empty(), "bare consumer stalled at {done}");
        let items = jobs
            .iter()
            .map(|j| (j, Settle::Complete(Vec::new())))
            .collect();
        for r in bare.settle_many(items).await? {
            r?;
        }
        done += jobs.len();
    }
    let bare_rate = n as f64 / t.elapsed().as_secs_f64();

    // The runtime, in-process, same Redis, same jobs.
    let rt = client.queue("runtime")?;
    fill(&rt, n).await?;
    let stop = CancellationToken::new();
    let worker = Worker::builder(Noop { started: None })
        .redis_url(server.url())
        .queue("runtime")
        .concurrency(CONCURRENCY)
        .metrics_addr(None)
        .build()?;
    let t = Instant::now();
    let running = tokio::spawn(worker.run_until(stop.clone().cancelled_owned()));
    wait_completed(&rt, n as u64).await?;
    let rt_rate = n as f64 / t.elapsed().as_secs_f64();
    stop.cancel();
    running.await??;

    // Latency: an idle worker, one job at a time.
    let lat = client.queue("latency")?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let worker = Worker::builder(Noop { started: Some(tx) })
        .redis_url(server.url())
        .queue("latency")
        .concurrency(CONCURRENCY)
        .metrics_addr(None)
        .build()?;
    let running = tokio::spawn(worker.run_until(stop.clone().cancelled_owned()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut lats = Vec::with_capacity(samples);
    for _ in 0..samples {
        let sent = Instant::now();
        lat.enqueue(b"{}".to_vec(), Default::default()).await?;
        let started = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await?
            .context("handler channel closed")?;
        lats.push(started - sent);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    running.await??;
    lats.sort();
    let (p50, p99) = (percentile(&lats, 0.5), percentile(&lats, 0.99));

    // Idle RSS of the release-built reference worker process.
    let rss_kb = idle_rss_kb(&server).unwrap_or_else(|e| {
        println!("idle RSS not measured: {e}");
        0
    });

    println!("jobs={n} concurrency={CONCURRENCY} redis_aof_fsync=everysec");
    println!("bare queue API (reserve 64 + settle_many): {bare_rate:.0} jobs/s");
    println!("worker runtime (no-op handler): {rt_rate:.0} jobs/s");
    println!(
        "ratio runtime/bare = {:.2} (target >= 0.8)",
        rt_rate / bare_rate
    );
    println!(
        "enqueue-to-start with an idle worker: p50 {p50:?} p99 {p99:?} over {samples} (target p99 < 5 ms)"
    );
    println!(
        "idle sleep_worker RSS: {:.1} MB (target < 20 MB)",
        rss_kb as f64 / 1024.0
    );
    println!(
        "spool worker_jobs_per_s={rt_rate:.0} bare_jobs_per_s={bare_rate:.0} ratio={:.2} p50_ms={:.2} p99_ms={:.2} idle_rss_mb={:.1}",
        rt_rate / bare_rate,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        rss_kb as f64 / 1024.0
    );
    Ok(())
}

fn idle_rss_kb(server: &RedisServer) -> Result<u64> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "spool-worker",
            "--example",
            "sleep_worker",
        ])
        .status()?
        .success();
    ensure!(ok, "cargo build --release --example sleep_worker failed");
    let bin = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/release/examples/sleep_worker");
    let mut w = WorkerProcess::spawn(&bin, &server.url(), &[("SPOOL_QUEUE", "idle")])?;
    w.wait_ready(Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(2));
    let pid = w.pid().context("pid")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    Ok(kb)
}
