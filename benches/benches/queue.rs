//! Queue throughput: N no-op jobs enqueued in batches, then reserved and
//! completed by C concurrent consumers, against the raw rate of plain
//! `LPUSH`+`RPOP` pairs sent through the same client in the same run.
//!
//! `cargo bench -p spool-benches --bench queue` starts its own redis-server
//! (AOF on, `appendfsync everysec`, Redis's default for AOF) and prints, last,
//! `spool enqueue_jobs_per_s=X process_jobs_per_s=Y concurrency=C`.
//! Settings: `SPOOL_BENCH_JOBS` (default 100000), `SPOOL_BENCH_CONSUMERS` (4),
//! `SPOOL_BENCH_BATCH` (jobs per reserve and per settle call, 100),
//! `SPOOL_BENCH_FSYNC` (`everysec`, `always`, or `off` for no AOF).
//!
//! Reference (named by issue 2): BullMQ 6 processes about 27,000 no-op jobs/s
//! with one worker on this class of 2-core machine; the target is 40,000.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use spool_queue::{Client, NewJob, Settle};
use spool_testkit::{RedisServer, ServerOptions};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let n = setting("SPOOL_BENCH_JOBS", 100_000);
    let consumers = setting("SPOOL_BENCH_CONSUMERS", 4);
    let batch = setting("SPOOL_BENCH_BATCH", 100);
    let fsync = std::env::var("SPOOL_BENCH_FSYNC").unwrap_or_else(|_| "everysec".into());
    let extra_args = match fsync.as_str() {
        "off" => vec!["--appendonly".into(), "no".into()],
        other => vec!["--appendfsync".into(), other.into()],
    };
    let server = RedisServer::start_with(ServerOptions {
        extra_args,
        ..ServerOptions::default()
    })?;
    let client = Client::connect(&server.url()).await?;
    let queue = client.queue("bench")?;

    // Enqueue: batches of 1000 per script call.
    let jobs: Vec<NewJob> = (0..n).map(|_| NewJob::new(b"{}".to_vec())).collect();
    let started = Instant::now();
    let ids = queue.enqueue_batch(jobs).await?;
    let enqueue_s = started.elapsed().as_secs_f64();
    ensure!(ids.len() == n);

    // Process: consumers reserve a batch and complete it in one call each.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            loop {
                let jobs = queue.reserve(batch, Duration::from_millis(100)).await?;
                if jobs.is_empty() {
                    return anyhow::Ok(done);
                }
                let items = jobs
                    .iter()
                    .map(|j| (j, Settle::Complete(Vec::new())))
                    .collect();
                for r in queue.settle_many(items).await? {
                    r?;
                }
                done += jobs.len();
            }
        }));
    }
    let mut processed = 0;
    for t in tasks {
        processed += t.await??;
    }
    // The last empty reserve of each consumer waited up to 100 ms; that wait is
    // not processing time.
    let process_s = (started.elapsed().as_secs_f64() - 0.1).max(1e-9);
    ensure!(processed == n, "processed {processed} of {n}");
    let stats = queue.stats().await?;
    ensure!(
        stats.outstanding == 0 && stats.completed == n as u64,
        "{stats:?}"
    );

    // Reference: LPUSH+RPOP pairs, one round trip per pair, same client and
    // concurrency.
    let pairs = n / 2;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..consumers {
        let client = client.clone();
        let per = pairs / consumers;
        tasks.push(tokio::spawn(async move {
            let key = format!("bench:raw:{c}");
            for _ in 0..per {
                let mut pipe = redis::pipe();
                pipe.cmd("LPUSH").arg(&key).arg("{}").ignore();
                pipe.cmd("RPOP").arg(&key);
                let _: (Option<String>,) = client.query_pipe(&pipe).await?;
            }
            anyhow::Ok(per)
        }));
    }
    let mut raw_pairs = 0;
    for t in tasks {
        raw_pairs += t.await??;
    }
    let raw_s = started.elapsed().as_secs_f64();

    // Where Redis spent its time: script cost per call, for docs/performance.md.
    let info: String = client.query(redis::cmd("INFO").arg("commandstats")).await?;
    for line in info
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha") || l.starts_with("cmdstat_blpop"))
    {
        println!("redis {line}");
    }
    let cpu: String = client.query(redis::cmd("INFO").arg("cpu")).await?;
    for line in cpu.lines().filter(|l| l.starts_with("used_cpu_")) {
        println!("redis {line}");
    }

    let enqueue_rate = n as f64 / enqueue_s;
    let process_rate = n as f64 / process_s;
    let raw_rate = raw_pairs as f64 / raw_s;
    println!("jobs={n} consumers={consumers} batch={batch} redis_aof_fsync={fsync}");
    println!("enqueue: {n} jobs in {enqueue_s:.3} s");
    println!(
        "process: {n} jobs in {process_s:.3} s (reserve {batch} + settle {batch} per round trip pair)"
    );
    println!("reference: {raw_pairs} LPUSH+RPOP pairs in {raw_s:.3} s = {raw_rate:.0} pairs/s");
    println!(
        "ratio process_jobs_per_s / raw_pairs_per_s = {:.2}",
        process_rate / raw_rate
    );
    println!(
        "ratio process_jobs_per_s / BullMQ 27000 = {:.2}",
        process_rate / 27_000.0
    );
    println!(
        "spool enqueue_jobs_per_s={enqueue_rate:.0} process_jobs_per_s={process_rate:.0} concurrency={consumers}"
    );
    Ok(())
}
