//! Flows under chaos: 1,000 flows of 1–20 children (some nested, some with
//! children that die) through real `sleep_worker` processes that are
//! SIGKILLed every 2 s and replaced, while Redis is SIGKILLed and restarted
//! from its AOF. Every parent must run exactly as its policy says, after all
//! of its children, having read their results; `spoolctl check`'s
//! invariants must hold at the end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spool_queue::{ChildFailure, Client, Flow, JobOptions, JobState, NewJob};
use spool_testkit::{RedisServer, example_binary};
use spool_tests::{Fleet, Record};

const FLOWS: usize = 1000;
const WORKERS: usize = 4;
const PER_WORKER: usize = 8;

/// A small deterministic generator (the run is the same every time).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// What the test expects of one parent.
struct Expect {
    policy: ChildFailure,
    /// Its direct children, and which of them are doomed to die.
    children: Vec<(String, bool)>,
}

fn payload(sleep_ms: u64, fail_times: u32) -> String {
    format!(r#"{{"sleep_ms": {sleep_ms}, "fail_times": {fail_times}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_run_each_parent_once_after_its_children_through_kills() -> Result<()> {
    let mut server = RedisServer::start()?;
    let client = Client::connect(&server.url()).await?;
    let q = client.queue("flows")?;
    // Retries come fast (10 ms backoff) and leases are short enough that a
    // killed worker's jobs come back within seconds.
    let base = JobOptions::default()
        .lease(Duration::from_secs(3))
        .backoff(Duration::from_millis(10), Duration::from_millis(50));
    let mut rng = Lcg(7);
    let mut expect: HashMap<String, Expect> = HashMap::new();
    let mut jobs_total = 0;
    for f in 0..FLOWS {
        let policy = if f % 2 == 0 {
            ChildFailure::Fail
        } else {
            ChildFailure::Continue
        };
        let root_id = format!("f{f}");
        let mut root = Flow::new(NewJob::with_options(
            payload(5, 0),
            base.clone().max_attempts(20).id(&root_id),
        ))
        .on_child_failure(policy);
        let mut children = Vec::new();
        let kids = 1 + rng.next(20) as usize;
        // One flow in five has a child that dies (out of attempts), under
        // either policy.
        let doomed = if f % 10 == 3 || f % 10 == 4 {
            Some(rng.next(kids as u64) as usize)
        } else {
            None
        };
        for c in 0..kids {
            let id = format!("f{f}.{c}");
            let dies = doomed == Some(c);
            // Others fail their first attempt now and then, and recover.
            let (fail_times, attempts) = if dies {
                (9, 2)
            } else {
                (u32::from(rng.next(8) == 0), 20)
            };
            let job = NewJob::with_options(
                payload(5 + rng.next(20), fail_times),
                base.clone().max_attempts(attempts).id(&id),
            );
            // One flow in eight nests: its first child is a parent of two.
            if f % 8 == 5 && c == 0 && !dies {
                let grandkids: Vec<(String, bool)> =
                    (0..2).map(|g| (format!("{id}.{g}"), false)).collect();
                let mut mid = Flow::new(job).on_child_failure(ChildFailure::Fail);
                for (g, _) in &grandkids {
                    mid = mid.child(NewJob::with_options(
                        payload(5, 0),
                        base.clone().max_attempts(20).id(g),
                    ));
                }
                expect.insert(
                    id.clone(),
                    Expect {
                        policy: ChildFailure::Fail,
                        children: grandkids,
                    },
                );
                jobs_total += 2;
                root = root.child(mid);
            } else {
                root = root.child(job);
            }
            children.push((id, dies));
            jobs_total += 1;
        }
        jobs_total += 1;
        let ids = q.enqueue_flow(&root).await?;
        ensure!(ids[0] == root_id.as_str());
        expect.insert(root_id, Expect { policy, children });
    }

    let dir = spool_testkit::artefact_dir().join(format!("flows-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir)?;
    let rec = dir.join("record");
    let rec_s = rec.display().to_string();
    let per = PER_WORKER.to_string();
    let env = [
        ("SPOOL_QUEUE", "flows"),
        ("SPOOL_CONCURRENCY", per.as_str()),
        ("SPOOL_DRAIN_TIMEOUT", "1s"),
        ("SPOOL_SWEEP_INTERVAL", "500ms"),
        ("SPOOL_SLEEP_RECORD", rec_s.as_str()),
    ];
    let mut fleet = Fleet::new(
        &example_binary("spool-worker", "sleep_worker")?,
        &server.url(),
        &env,
        Duration::from_secs(2),
    );
    fleet.scale_to(WORKERS)?;
    let start = Instant::now();
    let (mut next_kill, mut redis_kills) = (2.0, 0);
    loop {
        let t = start.elapsed().as_secs_f64();
        if t >= next_kill {
            next_kill += 2.0;
            fleet.kill_random();
        }
        if redis_kills < 2 && t >= 4.0 + 8.0 * redis_kills as f64 {
            redis_kills += 1;
            server.kill();
            tokio::time::sleep(Duration::from_millis(300)).await;
            server.restart()?;
        }
        fleet.scale_to(WORKERS)?;
        if let Ok(s) = q.stats().await
            && s.ready + s.active + s.scheduled + s.waiting == 0
            && redis_kills == 2
        {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(240),
            "not done after 240 s: {:?}; workers:\n{}",
            q.stats().await,
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let kills = fleet.killed;
    fleet.scale_to(0)?;
    fleet.wait_all_gone(Duration::from_secs(10))?;

    let record = Record::read_required(&rec)?;
    // Last `done` of each job, and each parent's first start.
    let mut last_done: HashMap<&str, u64> = HashMap::new();
    let mut first_start: HashMap<&str, u64> = HashMap::new();
    let mut read: HashMap<&str, u32> = HashMap::new();
    for e in &record.0 {
        match e.kind.as_str() {
            "done" => {
                let d = last_done.entry(e.id.as_str()).or_default();
                *d = (*d).max(e.ms);
                if let Some(n) = e.children_read {
                    read.insert(e.id.as_str(), n);
                }
            }
            "start" => {
                let s = first_start.entry(e.id.as_str()).or_insert(e.ms);
                *s = (*s).min(e.ms);
            }
            _ => {}
        }
    }
    let (mut completed_parents, mut dead_parents) = (0, 0);
    for (parent, want) in &expect {
        let info = q.info(parent).await?;
        let doomed: Vec<&str> = want
            .children
            .iter()
            .filter(|(_, d)| *d)
            .map(|(c, _)| c.as_str())
            .collect();
        if !doomed.is_empty() && want.policy == ChildFailure::Fail {
            // Dead, naming its dying child; it never ran.
            ensure!(info.state == JobState::Dead, "{parent}: {:?}", info.state);
            ensure!(
                info.failed_by.as_deref() == Some(doomed[0]),
                "{parent} failed by {:?}, not {}",
                info.failed_by,
                doomed[0]
            );
            ensure!(!first_start.contains_key(parent.as_str()), "{parent} ran");
            dead_parents += 1;
            continue;
        }
        ensure!(
            info.state == JobState::Completed,
            "{parent}: {:?} ({:?})",
            info.state,
            info.last_error
        );
        completed_parents += 1;
        // After all of its children: its first start follows every child's
        // last finish.
        let started = first_start
            .get(parent.as_str())
            .with_context(|| format!("{parent} never started"))?;
        for (c, dies) in &want.children {
            if *dies {
                continue;
            }
            let done = last_done
                .get(c.as_str())
                .with_context(|| format!("child {c} never finished"))?;
            ensure!(
                started >= done,
                "{parent} started at {started}, before {c} finished at {done}"
            );
        }
        // With their results: it read one per child that completed.
        let completed = want.children.iter().filter(|(_, d)| !d).count() as u32;
        ensure!(
            read.get(parent.as_str()) == Some(&completed),
            "{parent} read {:?} results, want {completed}",
            read.get(parent.as_str())
        );
        let result = info.result.context("a completed parent has a result")?;
        ensure!(
            result["children_results"] == completed,
            "{parent}: {result}"
        );
    }
    // Exactly once after completion: no start after a job's recorded finish.
    for e in record.0.iter().filter(|e| e.kind == "start") {
        if let Ok(info) = q.info(&e.id).await
            && info.state == JobState::Completed
        {
            let fin = info.finished_at_ms.unwrap_or(u64::MAX);
            ensure!(
                e.ms <= fin,
                "{} started at {} after completing at {fin}",
                e.id,
                e.ms
            );
        }
    }
    let report = q.check(false).await?;
    ensure!(report.findings.is_empty(), "{:?}", report.findings);
    let s = q.stats().await?;
    ensure!(
        s.outstanding == 0 && s.waiting == 0 && s.active == 0,
        "{s:?}"
    );
    eprintln!(
        "flows: {FLOWS} flows, {jobs_total} jobs, {completed_parents} parents completed, \
         {dead_parents} failed by a child; {kills} worker kills, 2 Redis kills, {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
