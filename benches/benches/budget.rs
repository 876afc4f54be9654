//! Redis work per job, operation by operation, against the budget in
//! docs/performance.md ("Redis budget per operation"), so a change that
//! spends more says so.
//!
//! For each persistence mode (AOF `everysec`, then none) it starts its own
//! redis-server and runs N no-op jobs through the queue API one operation
//! at a time, as the runtime calls them: enqueue (batches of 100), reserve
//! (batches of 50), one heartbeat with progress per job (`heartbeat`: a job
//! beating alone), then again 50 jobs per call (`heartbeat_batch`: a
//! worker's jobs due at once), settle complete
//! (batches of 50, the runtime's group commit), and the sweep that prunes
//! them when their retention (1 s here) has run out; then flows (in a queue
//! of their own): enqueue in flows of one parent and 99 children
//! (`flow_enqueue`, per job), and settling the children, each of which
//! records its result with its parent and the last makes the parent ready
//! (`flow_settle`, per child). Around each phase it
//! reads the Redis process's CPU (`INFO cpu`, user + sys, every thread:
//! AOF writes and the network included), cross-checked with the time Redis
//! counted inside the script calls (`INFO commandstats`, `EVALSHA`'s
//! `usec`), the calls per job and the bytes appended to the AOF.
//!
//! It prints one line per operation and mode:
//! `budget op=reserve mode=aof us_per_job=3.10 budget=4.0 aof_bytes_per_job=… ok`
//! and last `budget over=K` (K operations over their budget). With
//! `SPOOL_BENCH_STRICT=1` it exits 1 when K > 0. Settings: `SPOOL_BENCH_JOBS`
//! (20000). A phase's CPU includes Redis's own timers over its length (about
//! 1 µs per job at this N), which the budgets leave room for.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spool_benches::setting;
use spool_queue::{Client, Flow, JobOptions, NewJob, Queue, ReservedJob, Settle};
use spool_testkit::RedisServer;

/// The Redis process's CPU seconds, calls per command, AOF bytes, and the
/// microseconds Redis counted inside script calls (`EVALSHA`'s `usec`).
type Sample = (f64, BTreeMap<String, u64>, u64, u64);

fn sample(server: &RedisServer) -> Result<Sample> {
    let u = spool_benches::redis_usage(server)?;
    let aof = spool_benches::info_field(server, "persistence", "aof_current_size").unwrap_or(0);
    let script_us = u.usec.get("evalsha").copied().unwrap_or(0);
    Ok((u.cpu_s, u.calls, aof, script_us))
}

/// What one operation cost per job.
struct Cost {
    /// Redis process CPU (`INFO cpu`): the scripts, the network, the AOF.
    us: f64,
    /// Of which inside the scripts (`INFO commandstats`).
    script_us: f64,
    calls: f64,
    aof_bytes: f64,
}

fn cost(before: &Sample, after: &Sample, n: usize) -> Cost {
    let n = n as f64;
    // The sampling itself (three INFO calls) is not the operation's.
    let calls: u64 = after
        .1
        .iter()
        .filter(|(k, _)| k.as_str() != "info")
        .map(|(k, v)| v - before.1.get(k).copied().unwrap_or(0))
        .sum();
    Cost {
        us: (after.0 - before.0) * 1e6 / n,
        script_us: after.3.saturating_sub(before.3) as f64 / n,
        calls: calls as f64 / n,
        aof_bytes: after.2.saturating_sub(before.2) as f64 / n,
    }
}

/// The budget table of docs/performance.md: operation → (AOF µs, no-AOF µs).
fn budgets() -> Result<BTreeMap<String, (f64, f64)>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/performance.md");
    let doc = std::fs::read_to_string(path).with_context(|| path.to_owned())?;
    let section = doc
        .split("## Redis budget per operation")
        .nth(1)
        .context("docs/performance.md has no \"Redis budget per operation\" section")?;
    let mut out = BTreeMap::new();
    // The first table of the section is the budget.
    let table = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'));
    for line in table {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, op, aof, noaof, ..] = cells[..]
            && let (Ok(a), Ok(b)) = (aof.parse::<f64>(), noaof.parse::<f64>())
        {
            out.insert(op.trim_matches('`').to_owned(), (a, b));
        }
    }
    ensure!(
        !out.is_empty(),
        "the budget table in docs/performance.md is empty"
    );
    Ok(out)
}

/// Leases `n` jobs, 50 per call (the runtime's batch).
async fn reserve_all(queue: &Queue, n: usize) -> Result<Vec<ReservedJob>> {
    let mut leased = Vec::with_capacity(n);
    while leased.len() < n {
        let got = queue.reserve(50, Duration::from_millis(10)).await?;
        ensure!(!got.is_empty(), "reserved {} of {n}", leased.len());
        leased.extend(got);
    }
    Ok(leased)
}

/// Completes `leased`, 50 per call (the runtime's group commit).
async fn settle_all(queue: &Queue, leased: &[ReservedJob]) -> Result<()> {
    for chunk in leased.chunks(50) {
        let items = chunk
            .iter()
            .map(|j| (j, Settle::Complete(Vec::new())))
            .collect();
        for r in queue.settle_many(items).await? {
            r?;
        }
    }
    Ok(())
}

async fn run(aof: bool, n: usize) -> Result<Vec<(&'static str, Cost)>> {
    let server = spool_benches::fresh_redis(aof)?;
    let client = Client::connect(&server.url()).await?;
    let queue = client.queue("budget")?;
    let mut out = Vec::new();

    let opts = JobOptions::default().retention(Duration::from_secs(1));
    let before = sample(&server)?;
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let jobs = chunk
            .iter()
            .map(|_| NewJob::with_options(b"{}".to_vec(), opts.clone()))
            .collect();
        queue.enqueue_batch(jobs).await?;
    }
    out.push(("enqueue", cost(&before, &sample(&server)?, n)));

    let before = sample(&server)?;
    let leased = reserve_all(&queue, n).await?;
    out.push(("reserve", cost(&before, &sample(&server)?, n)));

    let before = sample(&server)?;
    for job in &leased {
        queue.heartbeat(job, Some(r#"{"percent":50}"#)).await?;
    }
    out.push(("heartbeat", cost(&before, &sample(&server)?, n)));

    // The same beats as a worker sends them when its jobs are due together.
    let before = sample(&server)?;
    for chunk in leased.chunks(50) {
        let beats: Vec<_> = chunk
            .iter()
            .map(|j| (j, Some(r#"{"percent":60}"#)))
            .collect();
        for r in queue.heartbeat_many(&beats, None).await? {
            r?;
        }
    }
    out.push(("heartbeat_batch", cost(&before, &sample(&server)?, n)));

    let before = sample(&server)?;
    settle_all(&queue, &leased).await?;
    out.push(("settle", cost(&before, &sample(&server)?, n)));

    // Retention runs out; the sweep deletes what it kept.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = sample(&server)?;
    let started = Instant::now();
    let mut pruned = 0;
    while pruned < n as u64 && started.elapsed() < Duration::from_secs(60) {
        let r = queue.sweep(1000).await?;
        if r.pruned == 0 {
            break;
        }
        pruned += r.pruned;
    }
    out.push(("sweep", cost(&before, &sample(&server)?, n)));
    ensure!(pruned >= n as u64, "the sweep pruned {pruned} of {n}");

    // Flows: a parent and 99 children per call.
    let flows = client.queue("budget-flow")?;
    let per = 100;
    let n_flows = n.div_ceil(per);
    let before = sample(&server)?;
    for _ in 0..n_flows {
        let mut f = Flow::new(NewJob::with_options(b"{}".to_vec(), opts.clone()));
        for _ in 1..per {
            f = f.child(NewJob::with_options(b"{}".to_vec(), opts.clone()));
        }
        flows.enqueue_flow(&f).await?;
    }
    out.push((
        "flow_enqueue",
        cost(&before, &sample(&server)?, n_flows * per),
    ));
    let children = n_flows * (per - 1);
    let leased = reserve_all(&flows, children).await?;
    let before = sample(&server)?;
    settle_all(&flows, &leased).await?;
    out.push(("flow_settle", cost(&before, &sample(&server)?, children)));
    ensure!(
        flows.stats().await?.ready == n_flows as u64,
        "every parent is ready once its children are settled"
    );
    Ok(out)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let n: usize = setting("SPOOL_BENCH_JOBS", 20_000);
    let strict = std::env::var("SPOOL_BENCH_STRICT").is_ok_and(|v| v == "1");
    let budget = budgets()?;
    let mut over = 0;
    let mut totals = Vec::new();
    for aof in [true, false] {
        let mode = if aof { "aof" } else { "noaof" };
        let mut total = 0.0;
        for (op, c) in run(aof, n).await? {
            // The total is a plain job's path (one beat, alone); flows and
            // the batched beat are extra.
            if !op.starts_with("flow_") && op != "heartbeat_batch" {
                total += c.us;
            }
            let limit = budget.get(op).map(|b| if aof { b.0 } else { b.1 });
            let verdict = match limit {
                Some(l) if c.us > l => {
                    over += 1;
                    "OVER"
                }
                Some(_) => "ok",
                None => "no budget",
            };
            println!(
                "budget op={op} mode={mode} us_per_job={:.2} budget={} script_us_per_job={:.2} calls_per_job={:.3} aof_bytes_per_job={:.0} {verdict}",
                c.us,
                limit.map_or("-".to_owned(), |l| format!("{l}")),
                c.script_us,
                c.calls,
                c.aof_bytes,
            );
        }
        totals.push(format!("{mode}_us_per_job={total:.2}"));
    }
    println!("budget over={over} {}", totals.join(" "));
    if strict && over > 0 {
        std::process::exit(1);
    }
    Ok(())
}
