//! The KEDA ScaledJob mode across real processes: each "Job" is a
//! `sleep_worker` in run-to-completion mode (`SPOOL_MAX_JOBS=1`,
//! `SPOOL_IDLE_EXIT`), created by KEDA's `default` strategy on the queue's
//! outstanding key (the `keda-scaledjob` component's choice) polled from the
//! real queue, with time scaled down. A burst of long jobs and a trickle of
//! short ones; one process SIGKILLed mid-job.
//!
//! Every job must be done exactly once (the killed one twice: it was
//! mid-handler), every process must exit 0 by itself except the killed one,
//! none may stay alive idle past its idle exit, and few Jobs may find no
//! work.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use spool_autoscale::jobs::{JobStrategy, new_jobs};
use spool_queue::{Client, JobOptions, NewJob};
use spool_testkit::{Record, RedisServer, WorkerProcess, example_binary};

const MAX_JOBS: u32 = 8;
const IDLE_EXIT: Duration = Duration::from_secs(2);

struct Job {
    process: WorkerProcess,
    started: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaledjob_workers_run_each_job_once_and_leave() -> Result<()> {
    let server = RedisServer::start()?;
    let client = Client::connect(&server.url()).await?;
    let q = client.queue("sj")?;
    let outstanding_key = q.keys().outstanding.clone();
    let bin = example_binary("spool-worker", "sleep_worker")?;
    let dir = spool_testkit::artefact_dir().join(format!("scaledjob-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir)?;
    let rec = dir.join("record");
    let rec_s = rec.display().to_string();
    let idle = format!("{}s", IDLE_EXIT.as_secs());
    let env = [
        ("SPOOL_QUEUE", "sj"),
        ("SPOOL_MAX_JOBS", "1"),
        ("SPOOL_CONCURRENCY", "1"),
        ("SPOOL_IDLE_EXIT", idle.as_str()),
        ("SPOOL_SWEEP_INTERVAL", "200ms"),
        ("SPOOL_SLEEP_RECORD", rec_s.as_str()),
    ];
    let opts = JobOptions::default()
        .lease(Duration::from_secs(2))
        .max_attempts(10);
    // The burst: 6 long jobs. The trickle: 6 short ones, one every 1.5 s.
    let mut ids = q
        .enqueue_batch(
            (0..6)
                .map(|_| NewJob::with_options(br#"{"sleep_ms": 4000}"#.to_vec(), opts.clone()))
                .collect(),
        )
        .await?;
    let mut trickle_left = 6;
    let mut next_trickle = Instant::now() + Duration::from_millis(1500);
    let mut jobs: Vec<Job> = Vec::new();
    // (exit status, lifetime, SIGKILLed by the test, pid)
    let mut exits: Vec<(Option<std::process::ExitStatus>, Duration, bool, u32)> = Vec::new();
    let mut created = 0u32;
    let mut killed_one = false;
    let started = Instant::now();
    let mut next_poll = Instant::now();
    loop {
        // Reap finished processes.
        let mut i = 0;
        while i < jobs.len() {
            if let Some(status) = jobs[i].process.try_wait()? {
                let j = jobs.swap_remove(i);
                exits.push((
                    Some(status),
                    j.started.elapsed(),
                    false,
                    j.process.pid().unwrap_or(0),
                ));
            } else {
                i += 1;
            }
        }
        if trickle_left > 0 && Instant::now() >= next_trickle {
            ids.push(q.enqueue(r#"{"sleep_ms": 1000}"#, opts.clone()).await?);
            trickle_left -= 1;
            next_trickle += Duration::from_millis(1500);
        }
        // SIGKILL one process mid-job, once.
        if !killed_one && started.elapsed() > Duration::from_secs(2) {
            let rec_now = Record::read(&rec);
            // Mid-handler: started, not done.
            let finished: Vec<u32> = rec_now
                .0
                .iter()
                .filter(|e| e.kind == "done")
                .map(|e| e.pid)
                .collect();
            let busy: Vec<u32> = rec_now
                .0
                .iter()
                .filter(|e| e.kind == "start" && !finished.contains(&e.pid))
                .map(|e| e.pid)
                .collect();
            if let Some(i) = jobs
                .iter()
                .position(|j| j.process.pid().is_some_and(|p| busy.contains(&p)))
            {
                let mut j = jobs.swap_remove(i);
                let pid = j.process.pid().unwrap_or(0);
                j.process.kill();
                exits.push((None, j.started.elapsed(), true, pid));
                killed_one = true;
            }
        }
        if Instant::now() >= next_poll {
            next_poll += Duration::from_secs(1);
            let mut c = server.connection()?;
            let outstanding: u64 = redis::cmd("SCARD").arg(&outstanding_key).query(&mut c)?;
            let running = jobs.len() as u32;
            let n = new_jobs(
                JobStrategy::Default,
                outstanding as f64,
                1.0,
                MAX_JOBS,
                running,
                0,
            );
            for _ in 0..n {
                jobs.push(Job {
                    process: WorkerProcess::spawn(&bin, &server.url(), &env)?,
                    started: Instant::now(),
                });
                created += 1;
            }
            let s = q.stats().await?;
            if trickle_left == 0 && s.outstanding == 0 && s.scheduled == 0 && jobs.is_empty() {
                break;
            }
        }
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "not done in 120 s: {} processes alive",
            jobs.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let record = Record::read_required(&rec)?;
    let done = record.done_counts();
    for id in &ids {
        ensure!(
            done.get(id.as_str()) == Some(&1),
            "job {id} done {:?} times",
            done.get(id.as_str())
        );
    }
    ensure!(killed_one, "no process was SIGKILLed mid-job");
    let starts_by_pid: HashMap<u32, usize> =
        record
            .0
            .iter()
            .filter(|e| e.kind == "start")
            .fold(HashMap::new(), |mut m, e| {
                *m.entry(e.pid).or_default() += 1;
                m
            });
    let mut found_nothing = 0;
    for (status, lived, killed, pid) in &exits {
        if *killed {
            continue;
        }
        ensure!(
            status.is_some_and(|s| s.success()),
            "a Job's process exited {status:?}"
        );
        let starts = starts_by_pid.get(pid).copied().unwrap_or(0);
        ensure!(
            starts <= 1,
            "process {pid} ran {starts} jobs with SPOOL_MAX_JOBS=1"
        );
        if starts == 0 {
            found_nothing += 1;
            // Idle exit plus a reserve wait and start-up, never much more.
            ensure!(
                *lived < IDLE_EXIT + Duration::from_secs(5),
                "an idle process lived {lived:?}"
            );
        }
    }
    println!(
        "{} jobs, {created} processes started ({found_nothing} found no work), 1 SIGKILLed, all others exited 0, in {:?}",
        ids.len(),
        started.elapsed()
    );
    ensure!(
        found_nothing <= 3,
        "{found_nothing} of {created} Jobs found no work"
    );
    Ok(())
}
