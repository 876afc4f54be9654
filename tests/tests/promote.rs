//! Nothing stranded at zero: with no worker running, delayed jobs and retries
//! reach the keys KEDA reads once they are due, through the promoter
//! (`spoolctl promote --every`), and then run exactly once when a worker
//! starts. Before the promoter, only a worker's reserve or sweep promoted due
//! work, so a fleet at zero never started for it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, ensure};
use spool_queue::{Client, JobOptions, JobState, NewJob};
use spool_testkit::{Record, RedisServer, WorkerProcess, example_binary, workspace_binary};

const QUEUE: &str = "zero";
/// How long after a job is due the autoscaler's key must count it: the
/// promoter's interval (500 ms here) plus a pass, with slack for a loaded
/// 2-core machine. The design target is 2 s (docs/autoscaling.md).
const VISIBLE_WITHIN: Duration = Duration::from_secs(4);

/// Kills the promoter when the test ends, however it ends.
struct Promoter(Child);

impl Drop for Promoter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Promoter {
    /// `spoolctl promote --every 500ms` against `server`, with `extra` args.
    fn start(server: &RedisServer, extra: &[&str]) -> Result<Self> {
        Ok(Promoter(
            Command::new(workspace_binary("spoolctl", "spoolctl")?)
                .args(["promote", "--every", "500ms"])
                .args(extra)
                .env("SPOOL_REDIS_URL", server.url())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start spoolctl promote")?,
        ))
    }
}

fn ms_since_epoch() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_work_reaches_the_autoscaler_keys_with_no_worker_running() -> Result<()> {
    let server = RedisServer::start()?;
    let client = Client::connect(&server.url()).await?;
    let q = client.queue(QUEUE)?;
    let mut redis = server.connection()?;
    let dir = tempfile::tempdir()?;
    let rec = dir.path().join("record");
    let rec_s = rec.display().to_string();
    let env = [
        ("SPOOL_QUEUE", QUEUE),
        ("SPOOL_CONCURRENCY", "1"),
        ("SPOOL_SWEEP_INTERVAL", "200ms"),
        ("SPOOL_SLEEP_RECORD", rec_s.as_str()),
    ];

    // A job that fails once, run by a run-to-completion worker that then
    // exits: its retry waits in `scheduled` with no worker left.
    let retried = q
        .enqueue(
            br#"{"sleep_ms": 10, "fail_times": 1}"#.to_vec(),
            JobOptions::default()
                .backoff(Duration::from_millis(500), Duration::from_millis(500))
                .max_attempts(3),
        )
        .await?;
    let bin = example_binary("spool-worker", "sleep_worker")?;
    let mut once_env = env.to_vec();
    once_env.push(("SPOOL_MAX_JOBS", "1"));
    let mut once = WorkerProcess::spawn(&bin, &server.url(), &once_env)?;
    let status = once.wait_exit(Duration::from_secs(30))?;
    ensure!(status.success(), "{status}:\n{}", once.log());
    ensure!(
        q.info(&retried).await?.state == JobState::Scheduled,
        "the retry is not waiting: {:?}",
        q.info(&retried).await?.state
    );
    // And a job delayed 3 s, enqueued with no worker running.
    let delayed = q
        .enqueue(
            br#"{"sleep_ms": 10}"#.to_vec(),
            JobOptions::default().delay(Duration::from_secs(3)),
        )
        .await?;
    let delayed_due = q.info(&delayed).await?;
    let due_ms = delayed_due
        .run_at_ms
        .context("a delayed job has a run-at time")?;

    // With nothing promoting, the keys KEDA reads stay at 0 past the due time.
    tokio::time::sleep(Duration::from_millis(
        due_ms.saturating_sub(ms_since_epoch()) + 500,
    ))
    .await;
    let outstanding: u64 = redis::cmd("SCARD")
        .arg(&q.keys().outstanding)
        .query(&mut redis)?;
    ensure!(
        outstanding == 0,
        "outstanding {outstanding} with no promoter"
    );
    let late = q.stats().await?.lateness_ms;
    ensure!(
        late >= 400,
        "stats report lateness {late} ms for overdue work"
    );

    // The promoter: both due jobs reach `outstanding` and `ready` at once.
    let promoter_port = spool_testkit::free_port()?;
    let health = format!("127.0.0.1:{promoter_port}");
    let _promoter = Promoter::start(&server, &["--health-addr", &health])?;
    let t = Instant::now();
    spool_testkit::wait_for("both due jobs in outstanding", VISIBLE_WITHIN, async || {
        let n: u64 = redis::cmd("SCARD")
            .arg(&q.keys().outstanding)
            .query_async(&mut client_conn(&server).await?)
            .await?;
        Ok(n == 2)
    })
    .await?;
    println!(
        "already-due work visible {:?} after the promoter started",
        t.elapsed()
    );
    let ready: u64 = redis::cmd("ZCARD").arg(&q.keys().ready).query(&mut redis)?;
    ensure!(ready == 2, "ready {ready}");
    let (code, metrics) = spool_testkit::http_get(promoter_port, "/metrics")?;
    ensure!(code == 200, "promoter /metrics {code}");
    let promoted =
        spool_testkit::metric_value(&metrics, "spool_promoted_total", &[("queue", QUEUE)]);
    ensure!(promoted == Some(2.0), "promoted {promoted:?}:\n{metrics}");
    let (code, _) = spool_testkit::http_get(promoter_port, "/readyz")?;
    ensure!(code == 200, "promoter /readyz {code}");

    // A job delayed while the promoter runs: visible within the bound of its
    // due time.
    let later = q
        .enqueue(
            br#"{"sleep_ms": 10}"#.to_vec(),
            JobOptions::default().delay(Duration::from_secs(2)),
        )
        .await?;
    let later_due = q.info(&later).await?.run_at_ms.context("run-at")?;
    spool_testkit::wait_for(
        "the later job in outstanding",
        Duration::from_secs(2) + VISIBLE_WITHIN,
        async || {
            let n: u64 = redis::cmd("SCARD")
                .arg(&q.keys().outstanding)
                .query_async(&mut client_conn(&server).await?)
                .await?;
            Ok(n == 3)
        },
    )
    .await?;
    let after_due = ms_since_epoch().saturating_sub(later_due);
    println!("a job due while the promoter ran was visible {after_due} ms after its due time");
    ensure!(
        after_due <= VISIBLE_WITHIN.as_millis() as u64,
        "visible {after_due} ms after due"
    );

    // A worker starts (as KEDA would): each job runs exactly once.
    let _w = WorkerProcess::spawn(&bin, &server.url(), &env)?;
    spool_testkit::wait_for("3 jobs completed", Duration::from_secs(30), async || {
        Ok(q.stats().await?.completed == 3)
    })
    .await?;
    let record = Record::read_required(&rec)?;
    let done = record.done_counts();
    for id in [&retried, &delayed, &later] {
        ensure!(
            done.get(id.as_str()) == Some(&1),
            "{id} done {:?} times",
            done.get(id.as_str())
        );
    }
    ensure!(q.info(&retried).await?.attempts == 2);
    Ok(())
}

async fn client_conn(server: &RedisServer) -> Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(server.url())?
        .get_multiplexed_async_connection()
        .await?)
}

/// `spoolctl promote` once: a pass over every known queue that prints what
/// it moved, and `--every` refuses nonsense.
#[tokio::test]
async fn promote_once_moves_due_jobs_of_every_queue() -> Result<()> {
    let server = RedisServer::start()?;
    let client = Client::connect(&server.url()).await?;
    for name in ["a", "b"] {
        let q = client.queue(name)?;
        q.enqueue_batch(
            (0..3)
                .map(|_| {
                    NewJob::with_options(
                        b"{}".to_vec(),
                        JobOptions::default().delay(Duration::from_millis(1)),
                    )
                })
                .collect(),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let spoolctl = workspace_binary("spoolctl", "spoolctl")?;
    let out = Command::new(&spoolctl)
        .args(["promote", "--json"])
        .env("SPOOL_REDIS_URL", server.url())
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let mut moved = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        moved += v["promoted"].as_u64().unwrap_or(0);
        ensure!(v["lateness_ms"] == 0, "{line}");
    }
    ensure!(moved == 6, "moved {moved}: {text}");
    for name in ["a", "b"] {
        ensure!(client.queue(name)?.stats().await?.ready == 3);
    }
    let bad = Command::new(&spoolctl)
        .args(["promote", "--every", "0s"])
        .env("SPOOL_REDIS_URL", server.url())
        .output()?;
    ensure!(bad.status.code() == Some(2), "{:?}", bad.status);
    ensure!(String::from_utf8_lossy(&bad.stderr).contains("--every"));
    Ok(())
}

/// The fleet from zero, driven by the KEDA model (`minReplicaCount: 0`)
/// reading the real outstanding key, with the promoter running: jobs come
/// due after the fleet went back to zero (a delay, and a retry whose backoff
/// outlasts the cooldown), the model starts pods for them, and each job runs
/// exactly once; the fleet ends at zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_at_zero_starts_for_due_work_through_the_promoter() -> Result<()> {
    use spool_autoscale::{Autoscaler, ScalerSpec};
    let server = RedisServer::start()?;
    let client = Client::connect(&server.url()).await?;
    let q = client.queue("fleet0")?;
    let dir = tempfile::tempdir()?;
    let rec = dir.path().join("record");
    let rec_s = rec.display().to_string();
    let bin = example_binary("spool-worker", "sleep_worker")?;
    let env = [
        ("SPOOL_QUEUE", "fleet0"),
        ("SPOOL_CONCURRENCY", "2"),
        ("SPOOL_SWEEP_INTERVAL", "500ms"),
        ("SPOOL_SLEEP_RECORD", rec_s.as_str()),
    ];
    let mut fleet = spool_tests::Fleet::new(&bin, &server.url(), &env, Duration::from_secs(3));
    let mut scaler = Autoscaler::new(
        ScalerSpec {
            min: 0,
            max: 3,
            polling_s: 1.0,
            cooldown_s: 3.0,
            target: 2.0,
            ..ScalerSpec::default()
        },
        0,
    );
    let _promoter = Promoter::start(&server, &["--queue", "fleet0"])?;
    let mut ids = q
        .enqueue_batch(
            (0..3)
                .map(|_| NewJob::new(br#"{"sleep_ms": 300}"#.to_vec()))
                .collect(),
        )
        .await?;
    // Due long after the first burst is done and the fleet is back at 0.
    ids.push(
        q.enqueue(
            br#"{"sleep_ms": 100}"#.to_vec(),
            JobOptions::default().delay(Duration::from_secs(14)),
        )
        .await?,
    );
    // Fails once; its retry comes due after the cooldown too.
    ids.push(
        q.enqueue(
            br#"{"sleep_ms": 100, "fail_times": 1}"#.to_vec(),
            JobOptions::default()
                .backoff(Duration::from_secs(10), Duration::from_secs(10))
                .max_attempts(3),
        )
        .await?,
    );
    let start = Instant::now();
    let mut replicas_seen: Vec<usize> = Vec::new();
    loop {
        let s = q.stats().await?;
        let n = scaler.step(start.elapsed().as_secs_f64(), s.outstanding as f64) as usize;
        fleet.scale_to(n)?;
        fleet.reap()?;
        replicas_seen.push(fleet.replicas());
        if s.completed == ids.len() as u64 && fleet.replicas() == 0 {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(90),
            "not done in 90 s: {s:?}, replicas {replicas_seen:?}\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    fleet.wait_all_gone(Duration::from_secs(10))?;
    // Up, down to zero, up again for the due work, down again.
    let mut phases: Vec<bool> = replicas_seen.iter().map(|&r| r > 0).collect();
    phases.dedup();
    println!("replicas per poll: {replicas_seen:?}");
    ensure!(
        phases.iter().filter(|&&up| up).count() >= 2,
        "the fleet never went back to zero and up again for the due work: {replicas_seen:?}"
    );
    let record = Record::read_required(&rec)?;
    let done = record.done_counts();
    for id in &ids {
        ensure!(
            done.get(id.as_str()) == Some(&1),
            "{id} done {:?}",
            done.get(id.as_str())
        );
    }
    Ok(())
}

/// The ScaledJob mode (`components/keda-scaledjob`, KEDA's default
/// strategy on the outstanding key, one job per Job): a retry and a delayed
/// job come due after every Job has exited; the promoter makes them visible
/// and a Job is started for each. Without the promoter both waited forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaledjob_starts_jobs_for_work_that_comes_due_after_every_job_exited() -> Result<()> {
    use spool_autoscale::jobs::{JobStrategy, new_jobs};
    let server = RedisServer::start()?;
    let client = Client::connect(&server.url()).await?;
    let q = client.queue("sj0")?;
    let dir = tempfile::tempdir()?;
    let rec = dir.path().join("record");
    let rec_s = rec.display().to_string();
    let bin = example_binary("spool-worker", "sleep_worker")?;
    let env = [
        ("SPOOL_QUEUE", "sj0"),
        ("SPOOL_MAX_JOBS", "1"),
        ("SPOOL_CONCURRENCY", "1"),
        ("SPOOL_IDLE_EXIT", "2s"),
        ("SPOOL_SWEEP_INTERVAL", "200ms"),
        ("SPOOL_SLEEP_RECORD", rec_s.as_str()),
    ];
    let _promoter = Promoter::start(&server, &["--queue", "sj0"])?;
    let ids = vec![
        q.enqueue(
            br#"{"sleep_ms": 50, "fail_times": 1}"#.to_vec(),
            JobOptions::default()
                .backoff(Duration::from_secs(8), Duration::from_secs(8))
                .max_attempts(3),
        )
        .await?,
        q.enqueue(
            br#"{"sleep_ms": 50}"#.to_vec(),
            JobOptions::default().delay(Duration::from_secs(10)),
        )
        .await?,
    ];
    let mut alive: Vec<WorkerProcess> = Vec::new();
    let mut alive_per_poll = Vec::new();
    let started = Instant::now();
    loop {
        let mut i = 0;
        while i < alive.len() {
            if let Some(status) = alive[i].try_wait()? {
                ensure!(
                    status.success(),
                    "a Job exited {status}:\n{}",
                    alive[i].log()
                );
                alive.swap_remove(i);
            } else {
                i += 1;
            }
        }
        let s = q.stats().await?;
        let n = new_jobs(
            JobStrategy::Default,
            s.outstanding as f64,
            1.0,
            4,
            alive.len() as u32,
            0,
        );
        for _ in 0..n {
            alive.push(WorkerProcess::spawn(&bin, &server.url(), &env)?);
        }
        alive_per_poll.push(alive.len());
        if s.completed == 2 && alive.is_empty() {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(90),
            "not done in 90 s: {s:?}, Jobs alive per poll {alive_per_poll:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("Jobs alive per poll: {alive_per_poll:?}");
    let mut phases: Vec<bool> = alive_per_poll.iter().map(|&n| n > 0).collect();
    phases.dedup();
    ensure!(
        phases.iter().filter(|&&up| up).count() >= 2,
        "the due work never found the ScaledJob at zero: {alive_per_poll:?}"
    );
    let record = Record::read_required(&rec)?;
    let done = record.done_counts();
    for id in &ids {
        ensure!(
            done.get(id.as_str()) == Some(&1),
            "{id} done {:?}",
            done.get(id.as_str())
        );
    }
    Ok(())
}
