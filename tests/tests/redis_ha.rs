//! Redis Sentinel failover under load: producers enqueue continuously and
//! `sleep_worker` processes work the queue while the master is SIGKILLed
//! three times; each time the sentinels promote a replica and everyone
//! carries on there (found through `redis+sentinel://`).
//!
//! With `SPOOL_REDIS_MIN_REPLICAS=1` every enqueue that returned an id must
//! be on the new master and end completed: no acknowledged job is lost. With
//! 0 the test reports how many acknowledged jobs the failovers lost — the
//! figure a user weighs against the cost of waiting for a replica.
//!
//! Longer: `SPOOL_SOAK=1` runs 10 failovers and 20,000 jobs per mode.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spool_queue::{Client, ClientOptions, Error, JobOptions, JobState, Queue};
use spool_testkit::{RedisSentinel, WorkerProcess, example_binary};

fn soak() -> bool {
    std::env::var_os("SPOOL_SOAK").is_some_and(|v| v != "0")
}

/// Enqueues a no-op job with this id, retrying transient errors (failover)
/// until Redis acknowledges it: the id makes the retry safe.
async fn enqueue_until_acknowledged(q: &Queue, id: &str) -> Result<()> {
    let opts = JobOptions::default()
        .id(id)
        .max_attempts(100)
        .lease(Duration::from_secs(3));
    loop {
        match q.enqueue(r#"{"sleep_ms": 5}"#, opts.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until `q` has nothing outstanding or scheduled, 120 s from `since`.
async fn drained(q: &Queue, since: Instant, workers: &[WorkerProcess]) -> Result<()> {
    loop {
        match q.stats().await {
            Ok(s) if s.outstanding == 0 && s.scheduled == 0 => return Ok(()),
            Ok(_) | Err(_) if since.elapsed() < Duration::from_secs(120) => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            r => {
                let logs: Vec<String> = workers.iter().map(|w| w.log()).collect();
                anyhow::bail!(
                    "queue {} did not drain in 120 s: {r:?}\n{}",
                    q.name(),
                    logs.join("\n---\n")
                )
            }
        }
    }
}

/// What one run saw.
#[derive(Debug)]
struct Outcome {
    acked: usize,
    completed: usize,
    lost: Vec<String>,
    other: Vec<(String, JobState)>,
    promotions: Vec<Duration>,
    /// Longest stretch without a successful enqueue.
    producer_gap: Duration,
}

/// How the master fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// SIGKILLed, restarted after the promotion (it rejoins as a replica).
    Kill,
    /// SIGSTOPped until the promotion, then thawed: it comes back believing
    /// it is the master, with its connections open, until the sentinels
    /// demote it.
    Freeze,
}

async fn run(min_replicas: u32, failure: Failure) -> Result<Outcome> {
    let (jobs, failovers) = if soak() { (20_000, 10) } else { (5_000, 3) };
    let sentinel = Arc::new(Mutex::new(RedisSentinel::start(2, 3)?));
    let url = sentinel
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .url();
    let client = Client::connect_with(
        &url,
        ClientOptions::default().with_min_replicas(min_replicas),
    )
    .await?;
    let q = client.queue("ha")?;
    let bin = example_binary("spool-worker", "sleep_worker")?;
    let min = min_replicas.to_string();
    let env = [
        ("SPOOL_QUEUE", "ha"),
        ("SPOOL_CONCURRENCY", "16"),
        ("SPOOL_LEASE", "3s"),
        ("SPOOL_SWEEP_INTERVAL", "500ms"),
        ("SPOOL_REDIS_MIN_REPLICAS", min.as_str()),
    ];
    let mut workers = vec![
        WorkerProcess::spawn(&bin, &url, &env)?,
        WorkerProcess::spawn(&bin, &url, &env)?,
    ];
    for w in &mut workers {
        w.wait_ready(Duration::from_secs(60))?;
    }

    // The producer: one job at a time, each with its own id, retried on a
    // transient error (an id makes the retry safe) until acknowledged.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let gap = Arc::new(Mutex::new(Duration::ZERO));
    let producer = {
        let (q, acked, gap) = (q.clone(), acked.clone(), gap.clone());
        let pace = Duration::from_micros(if soak() { 2_000 } else { 3_000 });
        tokio::spawn(async move {
            let mut last = Instant::now();
            for i in 0..jobs {
                let id = format!("job-{i:06}");
                enqueue_until_acknowledged(&q, &id).await?;
                let now = Instant::now();
                if let Ok(mut g) = gap.lock() {
                    *g = (*g).max(now - last);
                }
                last = now;
                if let Ok(mut a) = acked.lock() {
                    a.push(id);
                }
                tokio::time::sleep(pace).await;
            }
            anyhow::Ok(())
        })
    };

    let mut promotions = Vec::new();
    for _ in 0..failovers {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let s = sentinel.clone();
        let took = tokio::task::spawn_blocking(move || {
            s.lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))
                .and_then(|mut s| {
                    match failure {
                        Failure::Kill => s.fail_over(),
                        Failure::Freeze => s.fail_over_frozen(),
                    }
                    .map_err(anyhow::Error::from)
                })
        })
        .await??;
        println!("failover: a replica was promoted {took:?} after the master died");
        promotions.push(took);
    }
    tokio::time::timeout(Duration::from_secs(240), producer)
        .await
        .context("the producer did not finish in 240 s")???;

    // Everything acknowledged settles (jobs lost in flight come back when
    // their leases run out).
    drained(&q, Instant::now(), &workers).await?;
    let ids = acked
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let mut out = Outcome {
        acked: ids.len(),
        completed: 0,
        lost: Vec::new(),
        other: Vec::new(),
        promotions,
        producer_gap: *gap.lock().map_err(|_| anyhow::anyhow!("poisoned"))?,
    };
    let mut states: HashMap<String, usize> = HashMap::new();
    for id in ids {
        match q.info(&id).await {
            Ok(info) if info.state == JobState::Completed => out.completed += 1,
            Ok(info) => {
                *states.entry(info.state.to_string()).or_default() += 1;
                out.other.push((id, info.state));
            }
            Err(Error::NotFound { .. }) => out.lost.push(id),
            Err(e) => return Err(e.into()),
        }
    }
    for w in &mut workers {
        w.kill();
    }
    if !out.lost.is_empty()
        && let Ok(s) = sentinel.lock()
    {
        // What happened, for whoever reads the failure: each node's role and
        // size, and the sentinels' own account of the failovers.
        println!("nodes: {}", s.nodes_seen());
        println!("{}", s.sentinel_logs());
    }
    println!(
        "{failure:?}, min_replicas={min_replicas}: {} acknowledged, {} completed, {} lost, other {states:?}; promotions {:?}; longest producer stall {:?}",
        out.acked,
        out.completed,
        out.lost.len(),
        out.promotions,
        out.producer_gap
    );
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_with_min_replicas_loses_no_acknowledged_job() -> Result<()> {
    let o = run(1, Failure::Kill).await?;
    ensure!(
        o.lost.is_empty(),
        "{} acknowledged jobs lost with SPOOL_REDIS_MIN_REPLICAS=1: {:?}",
        o.lost.len(),
        &o.lost[..o.lost.len().min(10)]
    );
    ensure!(
        o.other.is_empty(),
        "not completed: {:?}",
        &o.other[..o.other.len().min(10)]
    );
    ensure!(o.completed == o.acked, "{o:?}");
    ensure!(o.promotions.len() >= 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_without_replica_waits_reports_what_it_loses() -> Result<()> {
    let o = run(0, Failure::Kill).await?;
    // The figure is the point; the test fails only on what must not happen
    // whatever the setting: a job neither completed nor lost.
    ensure!(
        o.other.is_empty(),
        "not completed: {:?}",
        &o.other[..o.other.len().min(10)]
    );
    ensure!(o.completed + o.lost.len() == o.acked, "{o:?}");
    // Contiguous runs of lost ids (they are numbered in enqueue order).
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for n in o
        .lost
        .iter()
        .filter_map(|id| id.strip_prefix("job-")?.parse::<usize>().ok())
    {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == n => *end = n,
            _ => runs.push((n, n)),
        }
    }
    println!("lost id runs: {runs:?}");
    println!(
        "without WAIT: {} of {} acknowledged jobs lost over {} failovers",
        o.lost.len(),
        o.acked,
        o.promotions.len()
    );
    Ok(())
}

/// The master frozen (SIGSTOP) until the sentinels promote its replica, then
/// thawed: with `SPOOL_REDIS_MIN_REPLICAS=1` no acknowledged job is lost (the
/// thawed old master has no replica left, so its `WAIT` fails and the write
/// is retried on the new master; calls in flight on it end when the
/// re-check finds the new master).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_master_with_min_replicas_loses_no_acknowledged_job() -> Result<()> {
    let o = run(1, Failure::Freeze).await?;
    ensure!(
        o.lost.is_empty(),
        "{} acknowledged jobs lost with SPOOL_REDIS_MIN_REPLICAS=1: {:?}",
        o.lost.len(),
        &o.lost[..o.lost.len().min(10)]
    );
    ensure!(
        o.other.is_empty(),
        "not completed: {:?}",
        &o.other[..o.other.len().min(10)]
    );
    ensure!(o.completed == o.acked, "{o:?}");
    Ok(())
}

/// The same without replica waits: what the thawed old master acknowledged
/// before it was left (the re-check, about a second after the sentinels'
/// decision) or demoted is lost; the figure is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_master_without_replica_waits_reports_what_it_loses() -> Result<()> {
    let o = run(0, Failure::Freeze).await?;
    ensure!(
        o.other.is_empty(),
        "not completed: {:?}",
        &o.other[..o.other.len().min(10)]
    );
    ensure!(o.completed + o.lost.len() == o.acked, "{o:?}");
    println!(
        "frozen master, without WAIT: {} of {} acknowledged jobs lost over {} failovers",
        o.lost.len(),
        o.acked,
        o.promotions.len()
    );
    Ok(())
}

/// A master of a 3-master, 3-replica Redis Cluster SIGKILLed under load: its
/// replica takes over its slots, queues on every slot keep taking and
/// running jobs, and every acknowledged job ends completed or is counted as
/// lost (a cluster cannot wait for replicas per write: the figure is
/// reported).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_keeps_every_queue_working() -> Result<()> {
    let mut cluster = spool_testkit::RedisCluster::start_with_replicas(3, 1)?;
    let url = cluster.url();
    let client = Client::connect(&url).await?;
    // Queues whose keys hash to different masters.
    let names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    let mut by_master: HashMap<u16, &str> = HashMap::new();
    for n in names {
        by_master
            .entry(cluster.master_port_for(&format!("spool:{{{n}}}:ready"))?)
            .or_insert(n);
    }
    ensure!(
        by_master.len() == 3,
        "queues on {} masters only",
        by_master.len()
    );
    let queues: Vec<&str> = by_master.values().copied().collect();
    let victim = queues[0];
    let bin = example_binary("spool-worker", "sleep_worker")?;
    let mut workers = Vec::new();
    for q in &queues {
        let env = [
            ("SPOOL_QUEUE", *q),
            ("SPOOL_CONCURRENCY", "8"),
            ("SPOOL_LEASE", "3s"),
            ("SPOOL_SWEEP_INTERVAL", "500ms"),
        ];
        let mut w = WorkerProcess::spawn(&bin, &url, &env)?;
        w.wait_ready(Duration::from_secs(60))?;
        workers.push(w);
    }
    let per_queue = if soak() { 5_000 } else { 1_000 };
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let mut producers = Vec::new();
    for q in &queues {
        let (queue, acked, name) = (client.queue(q)?, acked.clone(), (*q).to_owned());
        producers.push(tokio::spawn(async move {
            for i in 0..per_queue {
                let id = format!("{name}-{i:05}");
                enqueue_until_acknowledged(&queue, &id).await?;
                if let Ok(mut a) = acked.lock() {
                    a.push((name.clone(), id));
                }
                tokio::time::sleep(Duration::from_millis(6)).await;
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (killed, took) = tokio::task::block_in_place(|| {
        cluster.kill_master_for(&format!("spool:{{{victim}}}:ready"))
    })?;
    println!(
        "cluster: master {killed} (queue {victim}) SIGKILLed; its replica took over in {took:?}"
    );
    for p in producers {
        tokio::time::timeout(Duration::from_secs(180), p)
            .await
            .context("a producer did not finish in 180 s")???;
    }
    let started = Instant::now();
    for q in &queues {
        drained(&client.queue(q)?, started, &workers).await?;
    }
    let ids = acked
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let (mut completed, mut lost, mut other) = (0, HashMap::<String, usize>::new(), Vec::new());
    for (q, id) in &ids {
        match client.queue(q)?.info(id).await {
            Ok(i) if i.state == JobState::Completed => completed += 1,
            Ok(i) => other.push((id.clone(), i.state)),
            Err(Error::NotFound { .. }) => *lost.entry(q.clone()).or_default() += 1,
            Err(e) => return Err(e.into()),
        }
    }
    for w in &mut workers {
        w.kill();
    }
    println!(
        "cluster failover: {} acknowledged, {completed} completed, lost by queue {lost:?}",
        ids.len()
    );
    ensure!(
        other.is_empty(),
        "not completed: {:?}",
        &other[..other.len().min(10)]
    );
    // Only the killed master's queue can lose anything.
    ensure!(
        lost.keys().all(|q| q == victim),
        "jobs lost on queues the failover did not touch: {lost:?}"
    );
    Ok(())
}
