//! Chaos: 3,000 jobs through 4 workers while workers are SIGKILLed every 2 s
//! and replaced, Redis is SIGKILLed and restarted from its AOF twice, and the
//! workers' connections to Redis are cut for 5 s. Nothing may be lost, nothing
//! may run again after its completion was acknowledged, and nothing may be
//! left leased.
//!
//! Soak: `SPOOL_SOAK=1 cargo test -p spool-tests --test chaos -- --nocapture`
//! runs the same chaos with 20 times the jobs (60,000) and a 30-minute limit;
//! it is not run in CI.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spool_queue::{Client, JobOptions, JobState, NewJob};
use spool_testkit::{RedisServer, example_binary};
use spool_tests::{FaultProxy, Fleet, Record, Timeline};

/// Jobs in the CI run; the soak (`SPOOL_SOAK=1`) multiplies them.
const JOBS: usize = 3000;
/// The soak's multiplier.
const SOAK_FACTOR: usize = 20;

fn soak() -> bool {
    std::env::var_os("SPOOL_SOAK").is_some_and(|v| v != "0")
}
const WORKERS: usize = 4;
const PER_WORKER: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_nothing_and_reruns_only_what_kills_explain() -> Result<()> {
    let jobs_total = if soak() { JOBS * SOAK_FACTOR } else { JOBS };
    let mut server = RedisServer::start()?;
    let proxy = FaultProxy::start(server.port())?;
    let client = Client::connect(&server.url()).await?;
    let q = client.queue("chaos")?;
    // A lease longer than the 5 s partition: only kills should cause re-runs.
    let opts = JobOptions::default()
        .lease(Duration::from_secs(8))
        .max_attempts(50);
    let jobs: Vec<NewJob> = (0..jobs_total)
        .map(|i| {
            NewJob::with_options(
                format!(r#"{{"sleep_ms": {}}}"#, 50 + (i * 37) % 100),
                opts.clone(),
            )
        })
        .collect();
    let ids = q.enqueue_batch(jobs).await?;

    let dir = spool_testkit::artefact_dir().join(format!("chaos-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir)?;
    let rec = dir.join("record");
    let rec_s = rec.display().to_string();
    let per = PER_WORKER.to_string();
    let env = [
        ("SPOOL_QUEUE", "chaos"),
        ("SPOOL_CONCURRENCY", per.as_str()),
        ("SPOOL_DRAIN_TIMEOUT", "1s"),
        ("SPOOL_SWEEP_INTERVAL", "500ms"),
        ("SPOOL_SLEEP_RECORD", rec_s.as_str()),
    ];
    let proxied = format!("redis://127.0.0.1:{}", proxy.port());
    let mut fleet = Fleet::new(
        &example_binary("spool-worker", "sleep_worker")?,
        &proxied,
        &env,
        Duration::from_secs(2),
    );
    fleet.scale_to(WORKERS)?;

    let mut timeline = Timeline::new(&["t_s", "ready", "active", "completed", "workers", "kills"]);
    let start = Instant::now();
    let (mut next_kill, mut redis_kills, mut cut_done) = (2.0, 0, false);
    let limit = Duration::from_secs(if soak() { 1800 } else { 110 });
    loop {
        let t = start.elapsed().as_secs_f64();
        if t >= next_kill {
            next_kill += 2.0;
            fleet.kill_random();
        }
        if redis_kills < 2 && t >= 5.0 + 10.0 * redis_kills as f64 {
            redis_kills += 1;
            server.kill();
            tokio::time::sleep(Duration::from_millis(500)).await;
            server.restart()?;
        }
        if !cut_done && t >= 10.0 {
            cut_done = true;
            proxy.cut(Duration::from_secs(5));
        }
        fleet.scale_to(WORKERS)?;
        if let Ok(s) = q.stats().await {
            timeline.push(vec![
                t,
                s.ready as f64,
                s.active as f64,
                s.completed as f64,
                fleet.replicas() as f64,
                fleet.killed as f64,
            ]);
            if s.completed == jobs_total as u64 && redis_kills == 2 && cut_done {
                break;
            }
        }
        ensure!(
            start.elapsed() < limit,
            "not done after {limit:?}; workers:\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let kills = fleet.killed;
    fleet.scale_to(0)?;
    fleet.wait_all_gone(Duration::from_secs(10))?;
    timeline.write("chaos")?;

    // Every job completed; nothing is left anywhere else.
    let s = q.stats().await?;
    ensure!(s.completed == jobs_total as u64, "{s:?}");
    ensure!(
        s.ready == 0 && s.active == 0 && s.outstanding == 0 && s.scheduled == 0 && s.dead == 0,
        "orphan state: {s:?}"
    );
    let mut finished_at = HashMap::new();
    for id in &ids {
        let info = q.info(id).await?;
        ensure!(info.state == JobState::Completed, "{id}: {}", info.state);
        finished_at.insert(id.clone(), info.finished_at_ms.context("finished_at")?);
    }

    // Nothing ran again after its completion was acknowledged.
    // The record must hold every job, or every check below passes vacuously.
    let record = Record::read_required(&rec)?;
    let done = record.done_counts();
    let missing: Vec<_> = ids
        .iter()
        .filter(|id| !done.contains_key(id.as_str()))
        .collect();
    ensure!(
        missing.is_empty() && record.starts() >= jobs_total,
        "the record lacks {} of {jobs_total} jobs ({} starts)",
        missing.len(),
        record.starts()
    );
    for e in record.0.iter().filter(|e| e.kind == "start") {
        let done = finished_at.get(e.id.as_str()).copied().unwrap_or(u64::MAX);
        ensure!(
            e.ms <= done,
            "job {} started at {} after completing at {done}",
            e.id,
            e.ms
        );
    }
    let reruns = record.starts().saturating_sub(jobs_total);
    eprintln!(
        "chaos: {kills} worker kills, 2 Redis kills, one 5 s partition; {reruns} handler re-runs"
    );
    ensure!(
        reruns <= kills * PER_WORKER,
        "{reruns} re-runs for {kills} kills of {PER_WORKER} slots"
    );
    Ok(())
}
