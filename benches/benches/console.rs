//! spool-console under load: the API stays O(page) with a million jobs in
//! Redis, and one job's event stream fans out to a thousand subscribers on
//! one poller.
//!
//! 1. p50/p99 of `GET /api/queues`, a page of 50 jobs and one job, with
//!    1,000,000 jobs queued, against the same requests with 1,000 (ratio;
//!    O(page) means about 1).
//! 2. 1,000 concurrent SSE subscribers of one running job for 10 s: the
//!    console's CPU seconds and resident memory, against one subscriber.
//!
//! `cargo bench -p spool-benches --bench console`. Settings:
//! `SPOOL_BENCH_JOBS` (1,000,000), `SPOOL_BENCH_SUBSCRIBERS` (1,000).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spool_benches::setting;
use spool_queue::{Client, JobOptions, NewJob, Queue};
use spool_testkit::{RedisServer, WorkerProcess, example_binary, free_port};

const REQUESTS: usize = 300;

struct Console {
    child: Child,
    base: String,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The console built with the benchmarks' own (release) profile.
fn console_binary() -> Result<std::path::PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = Command::new(cargo)
        .args(["build", "--release", "-q", "-p", "spool-console"])
        .status()?
        .success();
    ensure!(ok, "cannot build spool-console");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release/spool-console"))
}

fn console(url: &str) -> Result<Console> {
    let port = free_port()?;
    let child = Command::new(console_binary()?)
        .env("SPOOL_REDIS_URL", url)
        .env("SPOOL_CONSOLE_ADDR", format!("127.0.0.1:{port}"))
        .env_remove("SPOOL_CONSOLE_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            start.elapsed() < Duration::from_secs(20),
            "console never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Console {
        child,
        base: format!("http://127.0.0.1:{port}"),
    })
}

async fn fill(q: &Queue, n: usize) -> Result<String> {
    let mut first = String::new();
    let mut left = n;
    while left > 0 {
        let k = left.min(10_000);
        let jobs = (0..k)
            .map(|_| NewJob::with_options(br#"{"sleep_ms":1}"#.to_vec(), JobOptions::default()))
            .collect();
        let ids = q.enqueue_batch(jobs).await?;
        if first.is_empty() {
            first = ids[0].to_string();
        }
        left -= k;
    }
    Ok(first)
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

async fn latencies(http: &reqwest::Client, base: &str, path: &str) -> Result<(f64, f64)> {
    let mut v = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let t = Instant::now();
        let r = http.get(format!("{base}{path}")).send().await?;
        ensure!(r.status().is_success(), "{path}: {}", r.status());
        r.bytes().await?;
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(percentiles(v))
}

/// CPU seconds (user + system) and resident KiB of a process.
fn usage(pid: u32) -> Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Ok((ticks / 100.0, rss))
}

async fn fan_out(http: &reqwest::Client, con: &Console, q: &Queue, n: usize) -> Result<(f64, u64)> {
    let id = q
        .enqueue(br#"{"sleep_ms":14000}"#.to_vec(), JobOptions::default())
        .await?
        .to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = con.child.id();
    let (cpu0, _) = usage(pid)?;
    let url = format!("{}/api/queues/fan/jobs/{id}/events", con.base);
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let http = http.clone();
        let url = url.clone();
        streams.push(tokio::spawn(async move {
            let mut r = http.get(url).send().await?;
            let mut events = 0usize;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                match tokio::time::timeout(Duration::from_secs(1), r.chunk()).await {
                    Ok(Ok(Some(c))) => events += c.windows(7).filter(|w| w == b"event: ").count(),
                    Ok(_) => break,
                    Err(_) => {}
                }
            }
            anyhow::Ok(events)
        }));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, rss) = usage(pid)?;
    let mut total = 0;
    for s in streams {
        total += s.await??;
    }
    let (cpu1, _) = usage(pid)?;
    ensure!(total >= n, "{n} subscribers saw only {total} events");
    Ok((cpu1 - cpu0, rss))
}

#[tokio::main]
async fn main() -> Result<()> {
    let jobs: usize = setting("SPOOL_BENCH_JOBS", 1_000_000);
    let subscribers: usize = setting("SPOOL_BENCH_SUBSCRIBERS", 1000);
    let redis = RedisServer::start_with(spool_testkit::ServerOptions {
        extra_args: vec!["--appendonly".into(), "no".into()],
        ..Default::default()
    })?;
    let client = Client::connect(&redis.url()).await?;
    let small = client.queue("small")?;
    let big = client.queue("big")?;
    let small_id = fill(&small, 1000).await?;
    let t = Instant::now();
    let big_id = fill(&big, jobs).await?;
    println!("filled {jobs} jobs in {:.1} s", t.elapsed().as_secs_f64());
    let con = console(&redis.url())?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2000)
        .build()?;
    println!("requests: {REQUESTS} each, sequential, p50 / p99 ms");
    for (label, small_path, big_path) in [
        (
            "GET /api/queues",
            "/api/queues".to_owned(),
            "/api/queues".to_owned(),
        ),
        (
            "page of 50 (ready)",
            "/api/queues/small/jobs?state=ready&limit=50".to_owned(),
            "/api/queues/big/jobs?state=ready&limit=50".to_owned(),
        ),
        (
            "one job",
            format!("/api/queues/small/jobs/{small_id}"),
            format!("/api/queues/big/jobs/{big_id}"),
        ),
    ] {
        let (s50, s99) = latencies(&http, &con.base, &small_path).await?;
        let (b50, b99) = latencies(&http, &con.base, &big_path).await?;
        println!(
            "  {label:<20} 1k jobs {s50:.2} / {s99:.2}   {jobs} jobs {b50:.2} / {b99:.2}   p50 ratio {:.2}",
            b50 / s50
        );
    }

    // Fan-out: a sleep_worker runs a 14 s job on queue `fan`.
    let mut worker = WorkerProcess::spawn(
        &example_binary("spool-worker", "sleep_worker")?,
        &redis.url(),
        &[("SPOOL_QUEUE", "fan")],
    )?;
    worker
        .wait_ready(Duration::from_secs(60))
        .context("sleep_worker")?;
    let fan = client.queue("fan")?;
    let (one_cpu, one_rss) = fan_out(&http, &con, &fan, 1).await?;
    let (many_cpu, many_rss) = fan_out(&http, &con, &fan, subscribers).await?;
    println!(
        "SSE fan-out over 10 s: 1 subscriber {one_cpu:.2} CPU s, RSS {one_rss} KiB; {subscribers} subscribers {many_cpu:.2} CPU s, RSS {many_rss} KiB"
    );
    println!(
        "spool console_sse cpu_ratio={:.1} rss_ratio={:.2}",
        many_cpu / one_cpu.max(0.01),
        many_rss as f64 / one_rss.max(1) as f64
    );
    worker.kill();
    Ok(())
}
