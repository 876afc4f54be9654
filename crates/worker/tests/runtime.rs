//! The drain contract and the runtime's guarantees, proven by running the
//! `sleep_worker` example as real processes against a real redis-server.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use spool_queue::{Client, JobOptions, JobState, NewJob, Queue};
use spool_testkit::{Record, RedisServer, WorkerProcess, example_binary, metric_value};

const QUEUE: &str = "test";

fn binary() -> Result<PathBuf> {
    Ok(example_binary("spool-worker", "sleep_worker")?)
}

async fn queue(server: &RedisServer) -> Result<Queue> {
    Ok(Client::connect(&server.url()).await?.queue(QUEUE)?)
}

fn worker(server: &RedisServer, env: &[(&str, &str)]) -> Result<WorkerProcess> {
    let mut all = vec![("SPOOL_QUEUE", QUEUE), ("SPOOL_SWEEP_INTERVAL", "200ms")];
    all.extend_from_slice(env);
    let mut w = WorkerProcess::spawn(&binary()?, &server.url(), &all)?;
    w.wait_ready(Duration::from_secs(30))?;
    Ok(w)
}

async fn enqueue(
    q: &Queue,
    payload: &str,
    n: usize,
    opts: JobOptions,
) -> Result<Vec<spool_queue::JobId>> {
    let jobs = (0..n)
        .map(|_| NewJob::with_options(payload.as_bytes().to_vec(), opts.clone()))
        .collect();
    Ok(q.enqueue_batch(jobs).await?)
}

/// A worker with two slots, both busy with `sleep_ms` jobs: the start of
/// every drain and outage test. `drain` sets SPOOL_DRAIN_TIMEOUT when given.
async fn two_busy(
    server: &RedisServer,
    q: &Queue,
    drain: Option<&str>,
    sleep_ms: u64,
) -> Result<(WorkerProcess, Vec<spool_queue::JobId>)> {
    let mut env = vec![("SPOOL_CONCURRENCY", "2")];
    if let Some(d) = drain {
        env.push(("SPOOL_DRAIN_TIMEOUT", d));
    }
    let w = worker(server, &env)?;
    let payload = format!(r#"{{"sleep_ms": {sleep_ms}}}"#);
    let ids = enqueue(q, &payload, 2, JobOptions::default()).await?;
    spool_testkit::wait_for("2 active jobs", Duration::from_secs(10), async || {
        Ok(q.stats().await?.active == 2)
    })
    .await?;
    Ok((w, ids))
}

async fn states(q: &Queue, ids: &[spool_queue::JobId]) -> Result<Vec<(JobState, u32)>> {
    let mut out = Vec::new();
    for id in ids {
        let info = q.info(id).await?;
        out.push((info.state, info.attempts));
    }
    Ok(out)
}

#[tokio::test]
async fn drain_lets_short_jobs_finish_and_exits_zero() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server).await?;
    let dir = tempfile::tempdir()?;
    let rec = dir.path().join("record");
    let rec_s = rec.display().to_string();
    let mut w = worker(
        &server,
        &[("SPOOL_CONCURRENCY", "4"), ("SPOOL_SLEEP_RECORD", &rec_s)],
    )?;
    let ids = enqueue(&q, r#"{"sleep_ms": 800}"#, 4, JobOptions::default()).await?;
    spool_testkit::wait_for("4 active jobs", Duration::from_secs(10), async || {
        Ok(q.stats().await?.active == 4)
    })
    .await?;

    w.signal("TERM")?;
    let status = w.wait_exit(Duration::from_secs(10))?;
    ensure!(status.success(), "exit status {status}:\n{}", w.log());
    let st = states(&q, &ids).await?;
    ensure!(st.iter().all(|s| *s == (JobState::Completed, 1)), "{st:?}");
    let done = Record::read(&rec)
        .0
        .iter()
        .filter(|e| e.kind == "done")
        .count();
    ensure!(done == 4, "{done} jobs finished");
    ensure!(
        !w.log().contains("releasing"),
        "nothing may be released:\n{}",
        w.log()
    );
    Ok(())
}

#[tokio::test]
async fn drain_deadline_releases_long_jobs_to_the_next_worker() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server).await?;
    let dir = tempfile::tempdir()?;
    let rec = dir.path().join("record");
    let rec_s = rec.display().to_string();
    let env = [
        ("SPOOL_CONCURRENCY", "2"),
        ("SPOOL_DRAIN_TIMEOUT", "1s"),
        ("SPOOL_SLEEP_RECORD", rec_s.as_str()),
    ];
    let mut first = worker(&server, &env)?;
    // A 60 s lease: only a release, not an expiry, can hand these on in time.
    let ids = enqueue(
        &q,
        r#"{"sleep_ms": 30000}"#,
        2,
        JobOptions::default().lease(Duration::from_secs(60)),
    )
    .await?;
    spool_testkit::wait_for("2 active jobs", Duration::from_secs(10), async || {
        Ok(q.stats().await?.active == 2)
    })
    .await?;

    let signalled = Instant::now();
    first.signal("TERM")?;
    let mut not_ready_after = None;
    while signalled.elapsed() < Duration::from_secs(1) {
        if let Ok((503, _)) = first.get("/readyz") {
            not_ready_after = Some(signalled.elapsed());
            break;
        }
    }
    let not_ready_after = not_ready_after.context("/readyz never turned 503")?;
    ensure!(
        not_ready_after < Duration::from_millis(100),
        "/readyz took {not_ready_after:?}"
    );

    let status = first.wait_exit(Duration::from_secs(3))?;
    let exited_after = signalled.elapsed();
    ensure!(status.success(), "exit status {status}:\n{}", first.log());
    ensure!(
        exited_after < Duration::from_secs(2),
        "exited after {exited_after:?} (drain 1 s + 1 s)"
    );
    let st = states(&q, &ids).await?;
    ensure!(
        st.iter().all(|s| *s == (JobState::Ready, 0)),
        "released jobs must be ready with the attempt refunded: {st:?}"
    );

    let second = worker(&server, &env)?;
    let pid2 = second.pid().context("pid")?;
    let started = Instant::now();
    spool_testkit::wait_for(
        "the second worker to start both jobs",
        Duration::from_secs(10),
        async || {
            Ok(Record::read(&rec)
                .0
                .iter()
                .filter(|e| e.kind == "start" && e.pid == pid2)
                .count()
                == 2)
        },
    )
    .await?;
    eprintln!(
        "second worker started the released jobs {:?} after its start (lease: 60 s)",
        started.elapsed()
    );
    ensure!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}

#[tokio::test]
async fn second_sigterm_releases_at_once() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server).await?;
    let (mut w, ids) = two_busy(&server, &q, Some("60s"), 30000).await?;
    let t = Instant::now();
    w.signal("TERM")?;
    // The second signal must reach a worker that is already draining.
    spool_testkit::wait_for("/readyz 503", Duration::from_secs(5), async || {
        Ok(matches!(w.get("/readyz"), Ok((503, _))))
    })
    .await?;
    w.signal("TERM")?;
    let status = w.wait_exit(Duration::from_secs(5))?;
    ensure!(status.success(), "{status}");
    ensure!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?} with a 60 s drain timeout",
        t.elapsed()
    );
    let st = states(&q, &ids).await?;
    ensure!(st.iter().all(|s| *s == (JobState::Ready, 0)), "{st:?}");
    Ok(())
}

#[tokio::test]
async fn sigkill_mid_job_is_recovered_by_another_worker() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server).await?;
    let mut a = worker(&server, &[])?;
    let ids = enqueue(
        &q,
        r#"{"sleep_ms": 1500}"#,
        1,
        JobOptions::default().lease(Duration::from_secs(1)),
    )
    .await?;
    spool_testkit::wait_for("the job to start", Duration::from_secs(10), async || {
        Ok(q.stats().await?.active == 1)
    })
    .await?;
    a.kill();
    let _b = worker(&server, &[])?;
    spool_testkit::wait_for("the job to complete", Duration::from_secs(20), async || {
        Ok(q.info(&ids[0]).await?.state == JobState::Completed)
    })
    .await?;
    ensure!(q.info(&ids[0]).await?.attempts == 2);
    Ok(())
}

#[tokio::test]
async fn crashing_and_panicking_jobs_end_dead_and_the_process_survives_panics() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server).await?;
    let opts = JobOptions::default()
        .max_attempts(2)
        .lease(Duration::from_millis(800))
        .backoff(Duration::from_millis(10), Duration::from_millis(10));
    let panic_id = enqueue(&q, r#"{"panic": true}"#, 1, opts.clone())
        .await?
        .remove(0);
    let crash_id = enqueue(&q, r#"{"crash": true, "sleep_ms": 100}"#, 1, opts)
        .await?
        .remove(0);
    let bad_id = q
        .enqueue(b"not json".to_vec(), JobOptions::default())
        .await?;

    // Play the kubelet: restart the worker whenever the crash job kills it.
    let mut w = worker(&server, &[("SPOOL_CONCURRENCY", "1")])?;
    let mut restarts = 0;
    let start = Instant::now();
    loop {
        let dead = [&panic_id, &crash_id, &bad_id];
        let mut all_dead = true;
        for id in dead {
            all_dead &= q.info(id).await?.state == JobState::Dead;
        }
        if all_dead {
            break;
        }
        if let Some(status) = w.try_wait()? {
            ensure!(
                status.code() == Some(137),
                "only the crash job may end the process: {status}\n{}",
                w.log()
            );
            restarts += 1;
            w = worker(&server, &[("SPOOL_CONCURRENCY", "1")])?;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(40),
            "jobs not dead in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(
        restarts == 2,
        "the crash job must kill exactly two workers, killed {restarts}"
    );
    let panic_info = q.info(&panic_id).await?;
    ensure!(panic_info.attempts == 2);
    ensure!(
        panic_info
            .last_error
            .unwrap_or_default()
            .contains("handler panicked")
    );
    let crash_err = q.info(&crash_id).await?.last_error.unwrap_or_default();
    ensure!(
        crash_err.contains("lease expired during attempt 2 of 2"),
        "{crash_err}"
    );
    let bad_err = q.info(&bad_id).await?.last_error.unwrap_or_default();
    ensure!(bad_err.contains("payload is not valid"), "{bad_err}");
    ensure!(w.try_wait()?.is_none(), "the worker must still run");
    Ok(())
}

#[tokio::test]
async fn redis_outage_under_load_loses_nothing() -> Result<()> {
    let mut server = RedisServer::start()?;
    let q = queue(&server).await?;
    let ids = enqueue(
        &q,
        r#"{"sleep_ms": 150}"#,
        60,
        JobOptions::default().lease(Duration::from_secs(10)),
    )
    .await?;
    let env = [("SPOOL_CONCURRENCY", "4")];
    let mut w1 = worker(&server, &env)?;
    let mut w2 = worker(&server, &env)?;
    spool_testkit::wait_for("both workers busy", Duration::from_secs(10), async || {
        Ok(q.stats().await?.completed > 0 && q.stats().await?.active >= 4)
    })
    .await?;

    server.kill();
    let down = Instant::now();
    let mut saw_not_ready = false;
    while down.elapsed() < Duration::from_secs(3) {
        if let (Ok((503, body)), Ok((503, _))) = (w1.get("/readyz"), w2.get("/readyz")) {
            ensure!(body.contains("redis"), "{body}");
            saw_not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(
        saw_not_ready,
        "workers must report not-ready while Redis is down"
    );
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down.elapsed())).await;
    server.restart()?;

    let q = queue(&server).await?;
    spool_testkit::wait_for(
        "every job to complete",
        Duration::from_secs(60),
        async || Ok(q.stats().await?.completed == ids.len() as u64),
    )
    .await?;
    w1.wait_ready(Duration::from_secs(10))?;
    w2.wait_ready(Duration::from_secs(10))?;
    ensure!(
        w1.try_wait()?.is_none() && w2.try_wait()?.is_none(),
        "workers must survive the outage"
    );
    Ok(())
}

#[tokio::test]
async fn metrics_report_depth_capacity_and_outcomes() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server).await?;
    let w = worker(&server, &[("SPOOL_CONCURRENCY", "3")])?;
    enqueue(&q, r#"{"sleep_ms": 2000}"#, 5, JobOptions::default()).await?;
    spool_testkit::wait_for("3 active", Duration::from_secs(10), async || {
        Ok(q.stats().await?.active == 3)
    })
    .await?;
    // The sweep (200 ms) refreshes the depth gauges: wait until they show
    // the three active jobs.
    let stats = q.stats().await?;
    spool_testkit::wait_for("the depth gauges", Duration::from_secs(10), async || {
        let (_, text) = w.get("/metrics")?;
        Ok(metric_value(
            &text,
            "spool_queue_depth",
            &[("queue", QUEUE), ("state", "active")],
        ) == Some(3.0))
    })
    .await?;
    let (status, text) = w.get("/metrics")?;
    ensure!(status == 200);
    let m = |name: &str, labels: &[(&str, &str)]| metric_value(&text, name, labels);
    ensure!(
        m("spool_worker_active_jobs", &[("queue", QUEUE)]) == Some(3.0),
        "{text}"
    );
    ensure!(m("spool_worker_capacity", &[("queue", QUEUE)]) == Some(3.0));
    ensure!(m("spool_worker_draining", &[]) == Some(0.0));
    ensure!(
        m("spool_queue_depth", &[("queue", QUEUE), ("state", "ready")]) == Some(stats.ready as f64),
        "ready: {stats:?}\n{text}"
    );
    ensure!(
        m(
            "spool_queue_depth",
            &[("queue", QUEUE), ("state", "active")]
        ) == Some(stats.active as f64)
    );

    spool_testkit::wait_for("all 5 completed", Duration::from_secs(15), async || {
        Ok(q.stats().await?.completed == 5)
    })
    .await?;
    // The counter moves when the settle returns, a moment after Redis saw it.
    spool_testkit::wait_for(
        "5 completions counted",
        Duration::from_secs(10),
        async || {
            let (_, text) = w.get("/metrics")?;
            Ok(metric_value(
                &text,
                "spool_jobs_total",
                &[("queue", QUEUE), ("outcome", "completed")],
            ) == Some(5.0))
        },
    )
    .await?;
    let (_, text) = w.get("/metrics")?;
    let m = |name: &str, labels: &[(&str, &str)]| metric_value(&text, name, labels);
    ensure!(
        m(
            "spool_jobs_total",
            &[("queue", QUEUE), ("outcome", "completed")]
        ) == Some(5.0),
        "{text}"
    );
    ensure!(m("spool_jobs_total", &[("queue", QUEUE), ("outcome", "dead")]) == Some(0.0));
    ensure!(
        m(
            "spool_job_duration_seconds_count",
            &[("queue", QUEUE), ("outcome", "completed")]
        ) == Some(5.0)
    );
    // A duration series appears with its outcome's first job, not before.
    ensure!(
        m(
            "spool_job_duration_seconds_count",
            &[("queue", QUEUE), ("outcome", "dead")]
        )
        .is_none(),
        "{text}"
    );
    ensure!(m("spool_job_wait_seconds_count", &[("queue", QUEUE)]) == Some(5.0));
    ensure!(m("spool_worker_active_jobs", &[("queue", QUEUE)]) == Some(0.0));

    // promtool, when installed, must accept the exposition.
    if let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(text.as_bytes())?;
        let out = child.wait_with_output()?;
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "promtool check metrics failed:\n{said}"
        );
        eprintln!("promtool check metrics: ok {said}");
    } else {
        spool_testkit::skipped("promtool is not installed (Debian: prometheus)")?;
    }
    Ok(())
}

#[tokio::test]
async fn bad_settings_stop_start_up_with_exit_code_2() -> Result<()> {
    for (k, v) in [
        ("SPOOL_CONCURRENCY", "0"),
        ("SPOOL_LOG_FORMAT", "xml"),
        ("SPOOL_LEASE", "soon"),
        ("SPOOL_MAX_JOBS", "0"),
        ("SPOOL_MAX_JOBS", "many"),
        ("SPOOL_IDLE_EXIT", "10ms"),
        ("SPOOL_IDLE_EXIT", "forever"),
        ("SPOOL_ALLOW_EVICTION", "perhaps"),
        ("SPOOL_REDIS_MIN_REPLICAS", "-1"),
        ("SPOOL_JOB_TIMEOUT", "0"),
        ("SPOOL_JOB_TIMEOUT_RETRY", "maybe"),
        ("SPOOL_MAX_JOB_TIMEOUT", "40d"),
    ] {
        let mut w = WorkerProcess::spawn(&binary()?, "redis://127.0.0.1:1", &[(k, v)])?;
        let status = w.wait_exit(Duration::from_secs(10))?;
        ensure!(status.code() == Some(2), "{k}={v}: {status}");
        ensure!(w.log().contains(k), "{k}: {}", w.log());
    }
    Ok(())
}

/// SIGTERM, then SIGINT, with Redis frozen (SIGSTOP): every path from a signal
/// to exit is bounded by the drain timeout plus `SHUTDOWN_MARGIN`, whatever
/// Redis does, and the jobs that could not be settled are named in the log.
#[tokio::test]
async fn shutdown_is_bounded_when_redis_hangs() -> Result<()> {
    for (signal, bound) in [
        // drain (2 s) + margin, with a second of slack for process exit.
        (
            "TERM",
            Duration::from_secs(2) + spool_worker::SHUTDOWN_MARGIN + Duration::from_secs(1),
        ),
        // "at once": the force wait plus slack.
        ("INT", spool_worker::FORCE_WAIT + Duration::from_secs(1)),
    ] {
        let server = RedisServer::start()?;
        let q = queue(&server).await?;
        let (mut w, ids) = two_busy(&server, &q, Some("2s"), 60000).await?;
        server.pause()?;
        let t = Instant::now();
        w.signal(signal)?;
        let status = w.wait_exit(Duration::from_secs(30));
        let took = t.elapsed();
        server.resume()?;
        let status = status?;
        ensure!(status.success(), "SIG{signal}: {status}\n{}", w.log());
        ensure!(
            took <= bound,
            "SIG{signal} with Redis frozen: exit took {took:?}, bound {bound:?}\n{}",
            w.log()
        );
        let log = w.log();
        ensure!(
            ids.iter().all(|id| log.contains(id.as_str())),
            "the unsettled job ids are not in the log:\n{log}"
        );
    }
    Ok(())
}

/// A worker whose every slot is busy still turns not-ready within a few
/// seconds of Redis going away.
#[tokio::test]
async fn a_busy_worker_reports_a_redis_outage_within_seconds() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server).await?;
    let (mut w, _) = two_busy(&server, &q, None, 60000).await?;
    server.pause()?;
    let down = Instant::now();
    let mut not_ready = None;
    while down.elapsed() < Duration::from_secs(15) {
        if let Ok((503, _)) = w.get("/readyz") {
            not_ready = Some(down.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.resume()?;
    let after = not_ready.context("/readyz stayed 200 for 15 s of a Redis outage")?;
    ensure!(
        after < Duration::from_secs(5),
        "not-ready only after {after:?}"
    );
    w.wait_ready(Duration::from_secs(10))?;
    w.signal("INT")?;
    w.wait_exit(Duration::from_secs(10))?;
    Ok(())
}

/// Redis gone (connections refused) while jobs finish during a drain: the
/// results cannot be settled, and the worker still exits within the bound,
/// naming the jobs.
#[tokio::test]
async fn shutdown_is_bounded_when_redis_refuses_connections() -> Result<()> {
    let mut server = RedisServer::start()?;
    let q = queue(&server).await?;
    // Jobs that finish during the drain, after Redis is gone.
    let (mut w, ids) = two_busy(&server, &q, Some("3s"), 1500).await?;
    server.kill();
    let t = Instant::now();
    w.signal("TERM")?;
    let status = w.wait_exit(Duration::from_secs(30))?;
    let took = t.elapsed();
    ensure!(status.success(), "{status}\n{}", w.log());
    let bound = Duration::from_secs(3) + spool_worker::SHUTDOWN_MARGIN + Duration::from_secs(1);
    ensure!(
        took <= bound,
        "exit took {took:?}, bound {bound:?}\n{}",
        w.log()
    );
    let log = w.log();
    ensure!(
        ids.iter().all(|id| log.contains(id.as_str())),
        "the unsettled job ids are not in the log:\n{log}"
    );
    Ok(())
}

#[tokio::test]
async fn the_registry_shows_live_workers_and_loses_killed_ones() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server).await?;
    // A 2 s lease: records expire 4 s after the last refresh.
    let env = [("SPOOL_LEASE", "2s"), ("SPOOL_CONCURRENCY", "2")];
    let mut a = worker(&server, &env)?;
    let mut b = worker(&server, &env)?;
    let ids = enqueue(&q, r#"{"sleep_ms": 3000}"#, 2, JobOptions::default()).await?;
    spool_testkit::wait_for(
        "both workers registered, the two jobs shown",
        Duration::from_secs(10),
        async || {
            let w = q.workers().await?;
            let running: usize = w.iter().map(|w| w.active.len()).sum();
            Ok(w.len() == 2 && running == 2)
        },
    )
    .await?;
    let listed = q.workers().await?;
    let shown: Vec<&String> = listed.iter().flat_map(|w| &w.active).collect();
    for id in &ids {
        ensure!(
            shown.iter().any(|s| s.as_str() == id.as_str()),
            "{id} not shown: {listed:?}"
        );
    }
    for w in &listed {
        ensure!(
            w.queue == QUEUE && w.concurrency == 2 && !w.draining && !w.version.is_empty(),
            "{w:?}"
        );
    }
    // SIGKILL one: its record expires within two lease periods.
    let killed_pid = a.pid().context("pid")?;
    a.kill();
    let killed = Instant::now();
    spool_testkit::wait_for(
        "the killed worker gone",
        Duration::from_secs(10),
        async || Ok(q.workers().await?.len() == 1),
    )
    .await?;
    ensure!(
        killed.elapsed() <= Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    let left = q.workers().await?;
    ensure!(
        !left[0].id.contains(&format!("-{killed_pid}-")),
        "the survivor is the killed one: {left:?}"
    );
    // SIGTERM the other: it shows draining, then removes itself at exit.
    b.signal("TERM")?;
    spool_testkit::wait_for("the draining flag", Duration::from_secs(5), async || {
        Ok(q.workers().await?.first().is_none_or(|w| w.draining))
    })
    .await?;
    ensure!(b.wait_exit(Duration::from_secs(30))?.success());
    ensure!(
        q.workers().await?.is_empty(),
        "a drained worker left its record"
    );
    Ok(())
}

/// Run to completion (a KEDA ScaledJob's pod): `SPOOL_MAX_JOBS` takes that
/// many jobs, lets them end and exits 0, leaving the rest queued;
/// `SPOOL_IDLE_EXIT` exits 0 once nothing is reservable and nothing runs,
/// never while a job runs.
#[tokio::test]
async fn max_jobs_and_idle_exit_end_the_process_cleanly() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server).await?;
    let ids = enqueue(&q, r#"{"sleep_ms": 300}"#, 5, JobOptions::default()).await?;
    let mut w = worker(
        &server,
        &[("SPOOL_CONCURRENCY", "2"), ("SPOOL_MAX_JOBS", "3")],
    )?;
    let status = w.wait_exit(Duration::from_secs(30))?;
    ensure!(
        status.success(),
        "SPOOL_MAX_JOBS exit: {status}\n{}",
        w.log()
    );
    let st = states(&q, &ids).await?;
    let done = st.iter().filter(|(s, _)| *s == JobState::Completed).count();
    let ready = st.iter().filter(|(s, _)| *s == JobState::Ready).count();
    ensure!(done == 3 && ready == 2, "took exactly 3 of 5: {st:?}");

    // Idle exit: the two left run, then the process waits out the idle
    // time and exits 0; a job longer than the idle time is not cut short.
    let long = enqueue(&q, r#"{"sleep_ms": 2500}"#, 1, JobOptions::default()).await?;
    let started = Instant::now();
    let mut w = worker(
        &server,
        &[("SPOOL_CONCURRENCY", "4"), ("SPOOL_IDLE_EXIT", "1s")],
    )?;
    let status = w.wait_exit(Duration::from_secs(30))?;
    let took = started.elapsed();
    ensure!(
        status.success(),
        "SPOOL_IDLE_EXIT exit: {status}\n{}",
        w.log()
    );
    let all: Vec<_> = ids.iter().chain(&long).cloned().collect();
    let st = states(&q, &all).await?;
    ensure!(
        st.iter().all(|(s, _)| *s == JobState::Completed),
        "every job completed before the idle exit: {st:?}"
    );
    ensure!(
        took >= Duration::from_millis(3500),
        "exited {took:?} after start: before the 2.5 s job plus 1 s idle"
    );
    println!("idle exit after {took:?} (2.5 s job + 1 s idle + a reserve wait)");

    // Nothing at all to do: gone within the idle time plus a reserve wait.
    let started = Instant::now();
    let mut w = worker(&server, &[("SPOOL_IDLE_EXIT", "1s")])?;
    let status = w.wait_exit(Duration::from_secs(15))?;
    ensure!(status.success(), "{status}");
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

/// `SPOOL_JOB_TIMEOUT`: a handling longer than the limit is cancelled and the
/// job ends dead with "timed out after …" in about the limit (retried instead
/// with `SPOOL_JOB_TIMEOUT_RETRY=true`), counted as `timed_out`.
#[tokio::test]
async fn a_job_over_its_time_limit_is_stopped_and_failed() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server).await?;
    let w = worker(&server, &[("SPOOL_JOB_TIMEOUT", "1s")])?;
    let t = Instant::now();
    let ids = enqueue(&q, r#"{"sleep_ms": 30000}"#, 1, JobOptions::default()).await?;
    spool_testkit::wait_for("the job to end", Duration::from_secs(15), async || {
        Ok(q.info(&ids[0]).await?.state == JobState::Dead)
    })
    .await?;
    let took = t.elapsed();
    let info = q.info(&ids[0]).await?;
    let err = info.last_error.clone().unwrap_or_default();
    ensure!(err.contains("timed out after 1s"), "{err}");
    ensure!(
        took < Duration::from_secs(6),
        "a 1 s limit took {took:?} to end the job"
    );
    let (_, metrics) = w.get("/metrics")?;
    let timed_out = metric_value(
        &metrics,
        "spool_jobs_total",
        &[("queue", QUEUE), ("outcome", "timed_out")],
    );
    ensure!(timed_out == Some(1.0), "timed_out counter {timed_out:?}");
    drop(w);

    let server = RedisServer::start()?;
    let q = queue(&server).await?;
    let _w = worker(
        &server,
        &[
            ("SPOOL_JOB_TIMEOUT", "1s"),
            ("SPOOL_JOB_TIMEOUT_RETRY", "true"),
        ],
    )?;
    let ids = enqueue(
        &q,
        r#"{"sleep_ms": 30000}"#,
        1,
        JobOptions::default().max_attempts(2),
    )
    .await?;
    spool_testkit::wait_for(
        "the retried job to die",
        Duration::from_secs(30),
        async || Ok(q.info(&ids[0]).await?.state == JobState::Dead),
    )
    .await?;
    let info = q.info(&ids[0]).await?;
    ensure!(
        info.attempts == 2,
        "retried once: {} attempts",
        info.attempts
    );
    Ok(())
}

/// A job's own `timeout` and `timeout_retry` options win over the worker's
/// settings, and `SPOOL_MAX_JOB_TIMEOUT` caps whatever a job asks for; the
/// error names where the limit came from.
#[tokio::test]
async fn a_jobs_own_time_limit_applies_within_the_workers_cap() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server).await?;
    let _w = worker(
        &server,
        &[("SPOOL_CONCURRENCY", "4"), ("SPOOL_MAX_JOB_TIMEOUT", "3s")],
    )?;
    let sleep = r#"{"sleep_ms": 30000}"#;
    let own = enqueue(
        &q,
        sleep,
        1,
        JobOptions::default().timeout(Duration::from_secs(1)),
    )
    .await?;
    let capped = enqueue(
        &q,
        sleep,
        1,
        JobOptions::default().timeout(Duration::from_secs(600)),
    )
    .await?;
    let retried = enqueue(
        &q,
        sleep,
        1,
        JobOptions::default()
            .timeout(Duration::from_secs(1))
            .timeout_retry(true)
            .max_attempts(2)
            .backoff(Duration::ZERO, Duration::ZERO),
    )
    .await?;
    // No limit of its own: the cap alone applies.
    let plain = enqueue(&q, sleep, 1, JobOptions::default()).await?;
    let t = Instant::now();
    let all = [&own[0], &capped[0], &retried[0], &plain[0]];
    spool_testkit::wait_for("every job to end", Duration::from_secs(30), async || {
        for id in all {
            if q.info(id).await?.state != JobState::Dead {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    ensure!(
        t.elapsed() < Duration::from_secs(20),
        "limits of 1-3 s took {:?}",
        t.elapsed()
    );
    let error = async |id: &spool_queue::JobId| -> Result<(String, u32)> {
        let info = q.info(id).await?;
        Ok((info.last_error.unwrap_or_default(), info.attempts))
    };
    let (e, _) = error(&own[0]).await?;
    ensure!(
        e.contains("timed out after 1s (the job's timeout option); not retried"),
        "{e}"
    );
    let (e, _) = error(&capped[0]).await?;
    ensure!(
        e.contains("timed out after 3s (SPOOL_MAX_JOB_TIMEOUT)"),
        "{e}"
    );
    let (e, attempts) = error(&plain[0]).await?;
    ensure!(
        e.contains("timed out after 3s (SPOOL_MAX_JOB_TIMEOUT)"),
        "{e}"
    );
    ensure!(attempts == 1, "not retried: {attempts} attempts");
    let (e, attempts) = error(&retried[0]).await?;
    ensure!(attempts == 2, "timeout_retry: {attempts} attempts; {e}");
    let info = q.info(&own[0]).await?;
    ensure!(
        info.timeout_ms == Some(1000) && info.timeout_retry.is_none(),
        "{info:?}"
    );
    Ok(())
}

/// `ctx.log`: lines reach the job's log in order before it settles, expire
/// with the job's retention (deleted with it at retention 0), and a flood is
/// capped at the latest 200 lines with a note of how many were dropped.
#[tokio::test]
async fn handler_log_lines_are_kept_with_the_job_and_capped() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server).await?;
    let _w = worker(&server, &[("SPOOL_CONCURRENCY", "3")])?;
    let kept = enqueue(
        &q,
        r#"{"sleep_ms": 50, "log": ["reading input", "half way"]}"#,
        1,
        JobOptions::default().retention(Duration::from_secs(3)),
    )
    .await?;
    let gone = enqueue(
        &q,
        r#"{"sleep_ms": 50, "log": ["x"]}"#,
        1,
        JobOptions::default().retention(Duration::ZERO),
    )
    .await?;
    let flood = enqueue(
        &q,
        r#"{"sleep_ms": 50, "log_flood": 5000}"#,
        1,
        JobOptions::default(),
    )
    .await?;
    spool_testkit::wait_for("the jobs to end", Duration::from_secs(20), async || {
        Ok(q.info(&kept[0]).await?.state == JobState::Completed
            && q.info(&gone[0]).await.is_err()
            && q.info(&flood[0]).await?.state == JobState::Completed)
    })
    .await?;
    let log = q.job_log(&kept[0]).await?;
    let text: Vec<&str> = log.iter().map(|l| l.message.as_str()).collect();
    ensure!(text == ["reading input", "half way"], "{log:?}");
    ensure!(
        log.iter()
            .all(|l| l.level == spool_queue::LogLevel::Info && l.at_ms > 0)
    );
    let mut conn = server.connection()?;
    let key = |id: &str| format!("{}log:{id}", q.keys().prefix);
    // Retention: the completed index holds the job until its expiry, and a
    // sweep deletes the job and its log then (docs/protocol.md, `sweep`).
    let expiry: f64 = redis::cmd("ZSCORE")
        .arg(&q.keys().completed)
        .arg(kept[0].as_str())
        .query(&mut conn)?;
    let left = expiry
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as f64;
    ensure!(
        left > 0.0 && left <= 3000.0,
        "the job is kept for its retention: {left} ms left"
    );
    let exists: bool = redis::cmd("EXISTS").arg(key(&gone[0])).query(&mut conn)?;
    ensure!(!exists, "retention 0 deletes the log with the job");
    let flooded = q.job_log(&flood[0]).await?;
    ensure!(
        flooded.len() == spool_queue::MAX_LOG_LINES,
        "{} lines kept",
        flooded.len()
    );
    ensure!(
        flooded.last().map(|l| l.message.as_str()) == Some("line 4999"),
        "the latest lines are kept: {:?}",
        flooded.last()
    );
    ensure!(
        flooded[0]
            .message
            .ends_with("log lines dropped: logged faster than sent"),
        "the log says what it lost: {:?}",
        flooded[0]
    );
    // Gone with its job at the first sweep after the retention.
    spool_testkit::wait_for(
        "the retained job to go",
        Duration::from_secs(15),
        async || Ok(q.info(&kept[0]).await.is_err()),
    )
    .await?;
    ensure!(
        q.job_log(&kept[0]).await?.is_empty(),
        "the log outlived its job"
    );
    Ok(())
}

/// Finds the time of the first `kind` event of job `id` in the record.
fn event_ms(rec: &Record, kind: &str, id: &str) -> Option<u64> {
    rec.0
        .iter()
        .find(|e| e.kind == kind && e.id == id)
        .map(|e| e.ms)
}

/// A slot is a slot: a handler that blocks its thread ignoring cancellation
/// (`block_ms`, through `run_blocking`) keeps its slot after its 1 s time
/// limit ends the job. With concurrency 1, the next job starts only after the
/// blocked handler returned; meanwhile the worker is not ready, and the
/// leftover is counted once. (Before: the slot was given away at the stop
/// grace and the next job ran beside the blocked one.)
#[tokio::test]
async fn a_handler_that_ignores_cancellation_keeps_its_slot_until_it_returns() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server).await?;
    let dir = tempfile::tempdir()?;
    let rec = dir.path().join("record");
    let rec_s = rec.display().to_string();
    let w = worker(
        &server,
        &[
            ("SPOOL_CONCURRENCY", "1"),
            ("SPOOL_JOB_TIMEOUT", "1s"),
            ("SPOOL_SLEEP_RECORD", &rec_s),
        ],
    )?;
    let blocked = enqueue(
        &q,
        r#"{"block_ms": 6000, "sleep_ms": 10}"#,
        1,
        JobOptions::default(),
    )
    .await?;
    let next = enqueue(&q, r#"{"sleep_ms": 10}"#, 1, JobOptions::default()).await?;
    // The time limit settles the blocked job (dead: timed out) long before
    // its handler returns; the worker must say it is not ready meanwhile.
    spool_testkit::wait_for(
        "the blocked job to time out",
        Duration::from_secs(20),
        async || Ok(q.info(&blocked[0]).await?.state == JobState::Dead),
    )
    .await?;
    let (code, body) = w.get("/readyz")?;
    let unblocked_yet = event_ms(&Record::read(&rec), "unblocked", &blocked[0]).is_some();
    ensure!(
        unblocked_yet || code == 503,
        "ready ({code} {body}) while a leftover handler holds the only slot"
    );
    spool_testkit::wait_for(
        "the next job to complete",
        Duration::from_secs(40),
        async || Ok(q.info(&next[0]).await?.state == JobState::Completed),
    )
    .await?;
    let record = Record::read_required(&rec)?;
    let unblocked = event_ms(&record, "unblocked", &blocked[0]).context("no unblocked event")?;
    let next_start = event_ms(&record, "start", &next[0]).context("next job never started")?;
    ensure!(
        next_start >= unblocked,
        "the next job started {} ms before the blocked handler returned: two handlers ran in one slot",
        unblocked - next_start
    );
    let err = q.info(&blocked[0]).await?.last_error.unwrap_or_default();
    ensure!(err.contains("timed out after 1s"), "{err}");
    let (_, metrics) = w.get("/metrics")?;
    let leftovers = metric_value(
        &metrics,
        "spool_worker_leftover_handlers_total",
        &[("queue", QUEUE)],
    );
    ensure!(leftovers == Some(1.0), "leftover counter {leftovers:?}");
    let holding = metric_value(
        &metrics,
        "spool_worker_leftover_handlers",
        &[("queue", QUEUE)],
    );
    ensure!(
        holding == Some(0.0),
        "leftover gauge {holding:?} after it returned"
    );
    ensure!(
        w.log().contains("ignored cancellation"),
        "the leftover is not logged:\n{}",
        w.log()
    );
    println!(
        "blocked handler returned at +{} ms; next job started {} ms after it",
        unblocked.saturating_sub(event_ms(&record, "start", &blocked[0]).unwrap_or(unblocked)),
        next_start - unblocked
    );
    Ok(())
}

/// `SPOOL_REDIS_MIN_REPLICAS=1` with no replica: each settle is applied on
/// the master but not confirmed. The worker reports that (outcome
/// `unreplicated`), frees the slot at once and moves on, instead of retrying a
/// settle that already happened until its lease ran out and counting it
/// `lease_lost`.
#[tokio::test]
async fn an_unreplicated_settle_frees_the_slot_and_is_not_lease_lost() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server).await?;
    let w = worker(
        &server,
        &[
            ("SPOOL_CONCURRENCY", "1"),
            ("SPOOL_LEASE", "30s"),
            ("SPOOL_REDIS_MIN_REPLICAS", "1"),
        ],
    )?;
    let t = Instant::now();
    let ids = enqueue(&q, r#"{"sleep_ms": 10}"#, 3, JobOptions::default()).await?;
    // Held for a lease each, three jobs would take 90 s; freed at once, about
    // a second each (the WAIT for the missing replica).
    spool_testkit::wait_for("3 jobs completed", Duration::from_secs(25), async || {
        Ok(q.stats().await?.completed == 3)
    })
    .await?;
    // The state is visible at once; the worker counts the outcome when the
    // WAIT for the missing replica gives up, a second later.
    spool_testkit::wait_for("3 settles counted", Duration::from_secs(10), async || {
        let (_, metrics) = w.get("/metrics")?;
        let n = metric_value(
            &metrics,
            "spool_jobs_total",
            &[("queue", QUEUE), ("outcome", "unreplicated")],
        );
        Ok(n == Some(3.0))
    })
    .await?;
    let took = t.elapsed();
    let st = states(&q, &ids).await?;
    ensure!(st.iter().all(|s| *s == (JobState::Completed, 1)), "{st:?}");
    let (_, metrics) = w.get("/metrics")?;
    let count = |outcome| {
        metric_value(
            &metrics,
            "spool_jobs_total",
            &[("queue", QUEUE), ("outcome", outcome)],
        )
    };
    ensure!(
        count("unreplicated") == Some(3.0),
        "unreplicated {:?}",
        count("unreplicated")
    );
    ensure!(
        count("lease_lost") == Some(0.0),
        "lease_lost {:?}",
        count("lease_lost")
    );
    ensure!(
        !w.log().contains("the lease will expire and the job rerun"),
        "{}",
        w.log()
    );
    println!("3 unreplicated settles took {took:?} in all");
    Ok(())
}

/// `INFO commandstats`' count of `EVALSHA` calls: every script call.
fn script_calls(server: &RedisServer) -> Result<u64> {
    let mut c = server.connection()?;
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut c)?;
    let line = info
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .context("no EVALSHA counted yet")?;
    let calls = line
        .split([':', ','])
        .find_map(|kv| kv.strip_prefix("calls="))
        .context("no calls= in the EVALSHA line")?;
    Ok(calls.parse()?)
}

/// A worker's jobs beat on one grid and their beats share script calls: eight
/// running jobs, started apart, beating every 100 ms make far fewer calls
/// than eight a beat,
/// and every lease holds (each job completes on its first attempt, although
/// its lease is shorter than the job).
#[tokio::test]
async fn the_beats_of_a_workers_jobs_share_script_calls() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server).await?;
    let _w = worker(
        &server,
        &[
            ("SPOOL_CONCURRENCY", "8"),
            ("SPOOL_HEARTBEAT", "100ms"),
            // No sweeps in the window counted below.
            ("SPOOL_SWEEP_INTERVAL", "60s"),
        ],
    )?;
    // Started apart, so that only the shared grid lines their beats up.
    let mut ids = Vec::new();
    for _ in 0..8 {
        let opts = JobOptions::default().lease(Duration::from_secs(1));
        ids.extend(enqueue(&q, r#"{"sleep_ms": 4000}"#, 1, opts).await?);
        tokio::time::sleep(Duration::from_millis(37)).await;
    }
    spool_testkit::wait_for("8 active jobs", Duration::from_secs(10), async || {
        Ok(q.stats().await?.active == 8)
    })
    .await?;
    let before = script_calls(&server)?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = script_calls(&server)? - before;
    let beats_alone = 8 * started.elapsed().as_millis() as u64 / 100;
    eprintln!("{calls} script calls; {beats_alone} beats");
    ensure!(
        calls * 2 <= beats_alone,
        "{calls} script calls in {:?}: beating each of 8 jobs alone would make about {beats_alone}",
        started.elapsed()
    );
    spool_testkit::wait_for("all 8 to complete", Duration::from_secs(30), async || {
        Ok(states(&q, &ids)
            .await?
            .iter()
            .all(|(s, _)| *s == JobState::Completed))
    })
    .await?;
    let attempts: Vec<u32> = states(&q, &ids).await?.iter().map(|(_, a)| *a).collect();
    ensure!(
        attempts.iter().all(|a| *a == 1),
        "a lease ran out between beats: attempts {attempts:?}"
    );
    Ok(())
}
