//! Redis capacity: bytes of Redis memory per job in each state, how long a
//! large backlog takes to enqueue and to drain, and whether retention keeps
//! memory flat over a long run. The figures docs/capacity.md turns into
//! sizing advice; printed with the machine they were measured on.
//!
//! `cargo bench -p spool-benches --bench capacity`. Settings:
//! `SPOOL_BENCH_JOBS` (the backlog, default 1,000,000),
//! `SPOOL_BENCH_SAMPLE` (jobs per memory sample, 100,000),
//! `SPOOL_BENCH_SECONDS` (the retention run, 40).
//!
//! Memory is Redis's own `used_memory` (INFO memory) before and after, on
//! a fresh server (AOF off: it does not change what the keys take), divided
//! by the jobs added. The backlog is enqueued in batches of 1,000 and
//! drained by 4 consumers reserving 100 and completing them in one call
//! (the bare queue API; the runtime's overhead is in `--bench worker`).

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use spool_benches::setting;
use spool_queue::{Client, JobOptions, NewJob, Queue, Settle};
use spool_testkit::{RedisServer, ServerOptions};

/// A typical encode job: an s3 input and a 3-rung HLS ladder.
const ENCODE_SPEC: &str = r#"{"input":"s3://media/uploads/2026/11/25/c0ffee0123456789/source.mov","output":"s3://media/renditions/c0ffee0123456789/hls","hardware":"auto","container":{"format":"hls","segment_s":6},"renditions":[{"codec":"h264","height":1080,"preset":"medium","bitrate_kbps":5000},{"codec":"h264","height":720,"preset":"medium","bitrate_kbps":3000},{"codec":"h264","height":480,"preset":"medium","bitrate_kbps":1200}],"audio":{"mode":"aac","bitrate_kbps":128}}"#;

async fn used(client: &Client) -> Result<u64> {
    Ok(client.server_memory().await?.used)
}

async fn enqueue_n(q: &Queue, n: usize, payload: &[u8], opts: &JobOptions) -> Result<()> {
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        let jobs = (0..k)
            .map(|_| NewJob::with_options(payload.to_vec(), opts.clone()))
            .collect();
        q.enqueue_batch(jobs).await?;
        left -= k;
    }
    Ok(())
}

/// Reserves and settles every job of `q` with 4 consumers; returns how many.
async fn drain(q: &Queue, how: fn() -> Settle) -> Result<usize> {
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            loop {
                let jobs = q.reserve(100, Duration::from_millis(200)).await?;
                if jobs.is_empty() {
                    return anyhow::Ok(n);
                }
                let items = jobs.iter().map(|j| (j, how())).collect();
                for r in q.settle_many(items).await? {
                    r?;
                }
                n += jobs.len();
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let redis = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cores} cores ({cpu}); {redis}")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let backlog: usize = setting("SPOOL_BENCH_JOBS", 1_000_000);
    let sample: usize = setting("SPOOL_BENCH_SAMPLE", 100_000);
    let secs: u64 = setting("SPOOL_BENCH_SECONDS", 40);
    println!("machine: {}", machine());
    let fresh = || {
        RedisServer::start_with(ServerOptions {
            extra_args: vec!["--appendonly".into(), "no".into()],
            ..ServerOptions::default()
        })
    };

    // 1. Bytes per job, by state.
    let server = fresh()?;
    let client = Client::connect_with(
        &server.url(),
        spool_queue::ClientOptions::default().with_max_payload_bytes(128 << 10),
    )
    .await?;
    let q = client.queue("cap")?;
    let opts = JobOptions::default().retention(Duration::from_secs(86_400));
    let base = used(&client).await?;
    enqueue_n(&q, sample, ENCODE_SPEC.as_bytes(), &opts).await?;
    let queued = used(&client).await?;
    let per_queued = (queued - base) as f64 / sample as f64;
    println!(
        "queued, encode spec ({} B payload): {per_queued:.0} B per job",
        ENCODE_SPEC.len()
    );
    // Completed with a typical result (the outputs' URIs and sizes).
    let settled = drain(&q, || {
        Settle::Complete(
            br#"{"outputs":[{"path":"s3://media/renditions/c0ffee0123456789/hls/master.m3u8","size_bytes":912}],"duration_s":61.2,"backend":"nvenc"}"#
                .to_vec(),
        )
    })
    .await?;
    ensure!(settled == sample, "drained {settled} of {sample}");
    let completed = used(&client).await?;
    let per_completed = (completed - base) as f64 / sample as f64;
    println!("completed, kept for retention (with a 170 B result): {per_completed:.0} B per job");
    let qd = client.queue("cap-dead")?;
    let base_dead = used(&client).await?;
    enqueue_n(&qd, sample, ENCODE_SPEC.as_bytes(), &opts).await?;
    drain(&qd, || {
        Settle::Dead("input: s3://media/uploads/x.mov: not found (NoSuchKey)".into())
    })
    .await?;
    let per_dead = (used(&client).await? - base_dead) as f64 / sample as f64;
    println!("dead (with its error): {per_dead:.0} B per job");
    let big_n = (sample / 20).max(1000);
    let qb = client.queue("cap-64k")?;
    let base_big = used(&client).await?;
    enqueue_n(&qb, big_n, &vec![b'x'; 64 << 10], &opts).await?;
    let per_big = (used(&client).await? - base_big) as f64 / big_n as f64;
    println!(
        "queued, 64 KiB payload: {per_big:.0} B per job ({:.0} B over the payload)",
        per_big - 65536.0
    );
    drop(client);
    drop(server);

    // 2. A large backlog: enqueue, then drain.
    let server = fresh()?;
    let client = Client::connect(&server.url()).await?;
    let q = client.queue("backlog")?;
    let t = Instant::now();
    enqueue_n(&q, backlog, ENCODE_SPEC.as_bytes(), &JobOptions::default()).await?;
    let enq = t.elapsed().as_secs_f64();
    let mem = used(&client).await?;
    let t = Instant::now();
    let n = drain(&q, || Settle::Complete(Vec::new())).await?;
    let drn = t.elapsed().as_secs_f64();
    ensure!(n == backlog, "drained {n} of {backlog}");
    println!(
        "backlog of {backlog}: enqueued in {enq:.1} s ({:.0} jobs/s), {:.0} MB of Redis; drained in {drn:.1} s ({:.0} jobs/s)",
        backlog as f64 / enq,
        mem as f64 / 1e6,
        backlog as f64 / drn
    );
    drop(client);
    drop(server);

    // 3. Retention keeps memory flat: jobs in and completed continuously
    // with a 2 s retention, swept every 500 ms as workers do.
    let server = fresh()?;
    let client = Client::connect(&server.url()).await?;
    let q = client.queue("flat")?;
    let short = JobOptions::default().retention(Duration::from_secs(2));
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut total = 0usize;
    let mut last_sweep = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        enqueue_n(&q, 500, ENCODE_SPEC.as_bytes(), &short).await?;
        total += drain(&q, || Settle::Complete(b"{}".to_vec())).await?;
        if last_sweep.elapsed() > Duration::from_millis(500) {
            q.sweep(10_000).await?;
            last_sweep = Instant::now();
            samples.push((start.elapsed().as_secs_f64(), used(&client).await?));
        }
    }
    let warm: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t > 5.0)
        .map(|(_, m)| *m)
        .collect();
    let (lo, hi) = (
        warm.iter().copied().min().unwrap_or(0),
        warm.iter().copied().max().unwrap_or(0),
    );
    let first = warm.first().copied().unwrap_or(0);
    let last = warm.last().copied().unwrap_or(0);
    let stats = q.stats().await?;
    println!(
        "retention 2 s, {total} jobs through in {secs} s: used memory after warm-up {:.1}..{:.1} MB (first {:.1}, last {:.1}); completed index holds {}",
        lo as f64 / 1e6,
        hi as f64 / 1e6,
        first as f64 / 1e6,
        last as f64 / 1e6,
        stats.completed
    );
    println!(
        "capacity queued_b={per_queued:.0} completed_b={per_completed:.0} dead_b={per_dead:.0} queued_64k_b={per_big:.0} backlog_enqueue_s={enq:.1} backlog_drain_s={drn:.1} flat_ratio={:.2}",
        last as f64 / first.max(1) as f64
    );
    Ok(())
}
