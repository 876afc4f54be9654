//! Queue throughput: N no-op jobs enqueued in batches, then reserved and
//! completed by C concurrent consumers, against the raw rate of plain
//! `LPUSH`+`RPOP` pairs sent through the same client, in the same run.
//!
//! `cargo bench -p spool-benches --bench queue` runs it twice, each time
//! against its own redis-server:
//!
//! 1. with AOF, `appendfsync everysec`: what spool's restart guarantee needs,
//!    and what production should run; printed as `spool_aof …`;
//! 2. with Redis's default persistence (no AOF): the conditions of the named
//!    reference, printed last as
//!    `spool enqueue_jobs_per_s=X process_jobs_per_s=Y concurrency=C`.
//!
//! Settings: `SPOOL_BENCH_JOBS` (default 100000), `SPOOL_BENCH_CONSUMERS` (4),
//! `SPOOL_BENCH_BATCH` (jobs per reserve and per settle call, 100).
//!
//! Reference (named by issue 2): BullMQ 6 processes about 27,000 no-op jobs/s
//! with one worker on this class of 2-core machine against a default Redis;
//! the target is 40,000.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use spool_benches::setting;
use spool_queue::{Client, NewJob, Settle};
use spool_testkit::{RedisServer, ServerOptions};

/// BullMQ 6's no-op rate on this class of machine (issue 2).
const BULLMQ_JOBS_PER_S: f64 = 27_000.0;

struct Figures {
    enqueue: f64,
    process: f64,
    raw_pairs: f64,
}

async fn run(
    label: &str,
    redis_args: &[&str],
    n: usize,
    consumers: usize,
    batch: usize,
) -> Result<Figures> {
    let server = RedisServer::start_with(ServerOptions {
        extra_args: redis_args.iter().map(|s| (*s).to_owned()).collect(),
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

    // Where Redis spent its time: script cost per call, for docs/performance.md.
    let info: String = client
        .raw_query(redis::cmd("INFO").arg("commandstats"))
        .await?;
    for line in info.lines().filter(|l| l.starts_with("cmdstat_evalsha")) {
        println!("{label}: redis {line}");
    }

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
                let _: (Option<String>,) = client.raw_query_pipe(&pipe).await?;
            }
            anyhow::Ok(per)
        }));
    }
    let mut raw_pairs = 0;
    for t in tasks {
        raw_pairs += t.await??;
    }
    let raw_s = started.elapsed().as_secs_f64();
    let f = Figures {
        enqueue: n as f64 / enqueue_s,
        process: n as f64 / process_s,
        raw_pairs: raw_pairs as f64 / raw_s,
    };
    println!(
        "{label}: enqueue {:.0} jobs/s, process {:.0} jobs/s, raw LPUSH+RPOP {:.0} pairs/s; process/raw {:.2}, process/BullMQ {:.2}",
        f.enqueue,
        f.process,
        f.raw_pairs,
        f.process / f.raw_pairs,
        f.process / BULLMQ_JOBS_PER_S
    );
    Ok(f)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let n = setting("SPOOL_BENCH_JOBS", 100_000);
    let consumers = setting("SPOOL_BENCH_CONSUMERS", 4);
    let batch = setting("SPOOL_BENCH_BATCH", 100);
    println!(
        "jobs={n} consumers={consumers} batch={batch} (reserve {batch} + settle {batch} per round-trip pair)"
    );
    let aof = run(
        "aof-everysec",
        &["--appendfsync", "everysec"],
        n,
        consumers,
        batch,
    )
    .await?;
    let plain = run(
        "default-persistence",
        &["--appendonly", "no"],
        n,
        consumers,
        batch,
    )
    .await?;
    println!(
        "spool_aof enqueue_jobs_per_s={:.0} process_jobs_per_s={:.0} concurrency={consumers}",
        aof.enqueue, aof.process
    );
    println!(
        "spool enqueue_jobs_per_s={:.0} process_jobs_per_s={:.0} concurrency={consumers}",
        plain.enqueue, plain.process
    );
    Ok(())
}
