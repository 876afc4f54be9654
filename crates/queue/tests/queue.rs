//! The queue's guarantees, each proven against a real redis-server that the
//! test starts on its own port.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use spool_queue::{
    CancelOutcome, Client, ClientOptions, Error, JobOptions, JobState, NewJob, Queue, Settle,
};
use spool_testkit::{RedisCluster, RedisServer};

async fn setup() -> Result<(RedisServer, Queue)> {
    let server = RedisServer::start()?;
    let client = Client::connect(&server.url()).await?;
    let queue = client.queue("test")?;
    Ok((server, queue))
}

fn raw(server: &RedisServer) -> Result<redis::Connection> {
    Ok(server.connection()?)
}

fn short_lease() -> JobOptions {
    JobOptions::default().lease(Duration::from_millis(300))
}

#[tokio::test]
async fn round_trip_keeps_binary_payloads_intact() -> Result<()> {
    let server = RedisServer::start()?;
    let max = 64 * 1024;
    let client = Client::connect_with(
        &server.url(),
        ClientOptions::default().with_max_payload_bytes(max),
    )
    .await?;
    let queue = client.queue("bin")?;

    let every_byte: Vec<u8> = (0..=255u8).cycle().take(max).collect();
    let id = queue
        .enqueue(every_byte.clone(), JobOptions::default())
        .await?;
    let jobs = queue.reserve(1, Duration::from_secs(2)).await?;
    ensure!(jobs.len() == 1, "expected one job, got {}", jobs.len());
    ensure!(jobs[0].id == id);
    ensure!(jobs[0].payload == every_byte, "payload changed in transit");
    ensure!(jobs[0].attempt == 1);
    queue.complete(&jobs[0], b"\x00\xffresult").await?;
    let info = queue.info(&id).await?;
    ensure!(info.state == JobState::Completed);

    let too_big = vec![0u8; max + 1];
    match queue.enqueue(too_big, JobOptions::default()).await {
        Err(e @ Error::PayloadTooLarge { .. }) => {
            let msg = e.to_string();
            ensure!(msg.contains("65537") && msg.contains("65536"), "{msg}");
        }
        other => bail!("an over-size payload must be refused, got {other:?}"),
    }
    ensure!(
        queue.stats().await?.ready == 0,
        "the refused job must not be enqueued"
    );
    Ok(())
}

#[tokio::test]
async fn lease_expiry_hands_job_to_next_consumer() -> Result<()> {
    let (_server, queue) = setup().await?;
    let id = queue.enqueue(b"{}".to_vec(), short_lease()).await?;
    let first = queue.reserve(1, Duration::from_secs(1)).await?.remove(0);
    ensure!(first.attempt == 1);

    tokio::time::sleep(Duration::from_millis(450)).await;
    let second = queue.reserve(1, Duration::from_secs(2)).await?;
    ensure!(
        second.len() == 1 && second[0].id == id,
        "the expired job must be handed over"
    );
    ensure!(second[0].attempt == 2, "attempt {}", second[0].attempt);

    let lost = |r: Result<_, Error>| matches!(r, Err(Error::LeaseLost { .. }));
    ensure!(lost(queue.heartbeat(&first, None).await.map(drop)));
    ensure!(lost(queue.complete(&first, b"stale").await));
    ensure!(lost(
        queue.fail_permanently(&first, "stale").await.map(drop)
    ));
    ensure!(lost(queue.release(&first).await));

    let info = queue.info(&id).await?;
    ensure!(info.state == JobState::Active && info.attempts == 2);
    ensure!(
        info.result.is_none(),
        "a stale consumer must change nothing"
    );
    queue.complete(&second[0], b"\"fresh\"").await?;
    ensure!(queue.info(&id).await?.result == Some(serde_json::json!("fresh")));
    Ok(())
}

#[tokio::test]
async fn heartbeats_keep_a_job_past_its_lease() -> Result<()> {
    let (_server, queue) = setup().await?;
    let id = queue.enqueue(b"{}".to_vec(), short_lease()).await?;
    let job = queue.reserve(1, Duration::from_secs(1)).await?.remove(0);
    let other = queue.client().queue("test")?;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let hb = queue.heartbeat(&job, Some(r#"{"percent":10}"#)).await?;
        ensure!(!hb.cancel_requested);
        let stolen = other.try_reserve(1).await?.jobs;
        ensure!(
            stolen.is_empty(),
            "a heartbeating job must not be handed over"
        );
    }
    queue.complete(&job, b"").await?;
    let info = queue.info(&id).await?;
    ensure!(info.state == JobState::Completed && info.attempts == 1);
    ensure!(info.progress == Some(serde_json::json!({"percent": 10})));
    Ok(())
}

/// One call beats several jobs, each answered on its own: a beat with
/// progress stores it, a cancel request is reported to its job only, and a
/// lost lease or a deleted job fails that entry and no other.
#[tokio::test]
async fn heartbeat_many_answers_each_job_on_its_own() -> Result<()> {
    let (server, queue) = setup().await?;
    let opts = JobOptions::default().lease(Duration::from_secs(30));
    let ids = queue
        .enqueue_batch(
            (0..4)
                .map(|_| NewJob::with_options(b"{}".to_vec(), opts.clone()))
                .collect(),
        )
        .await?;
    let mut jobs = queue.reserve(4, Duration::from_secs(1)).await?;
    jobs.sort_by_key(|j| ids.iter().position(|i| *i == j.id));
    ensure!(jobs.len() == 4, "reserved {}", jobs.len());
    ensure!(queue.cancel(&ids[1]).await? == CancelOutcome::Requested);
    // Job 2 handed back and leased again: the first lease is stale.
    queue.settle(&jobs[2], Settle::Release).await?;
    let again = queue.reserve(1, Duration::from_secs(1)).await?;
    ensure!(again.len() == 1 && again[0].id == ids[2]);
    redis::cmd("DEL")
        .arg(queue.keys().job(&ids[3]))
        .exec(&mut raw(&server)?)?;

    let before = jobs[0].deadline;
    // A copy without the payload beats as well as the lease it came from.
    let light = jobs[0].without_payload();
    ensure!(light.payload.is_empty() && light.id == jobs[0].id && light.token() == jobs[0].token());
    let beats = [
        (&light, Some(r#"{"percent":40}"#)),
        (&jobs[1], None),
        (&jobs[2], Some(r#"{"percent":99}"#)),
        (&jobs[3], None),
    ];
    let out = queue
        .heartbeat_many(&beats, Some(Duration::from_secs(60)))
        .await?;
    ensure!(out.len() == 4, "{} answers for 4 beats", out.len());
    let first = out[0].as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(!first.cancel_requested && first.deadline > before);
    ensure!(
        matches!(&out[1], Ok(hb) if hb.cancel_requested),
        "{:?}",
        out[1]
    );
    ensure!(
        matches!(&out[2], Err(Error::LeaseLost { .. })),
        "{:?}",
        out[2]
    );
    ensure!(
        matches!(&out[3], Err(Error::NotFound { .. })),
        "{:?}",
        out[3]
    );
    ensure!(queue.info(&ids[0]).await?.progress == Some(serde_json::json!({"percent": 40})));
    ensure!(
        queue.info(&ids[2]).await?.progress.is_none(),
        "a stale lease's progress must not be stored"
    );
    // An empty batch is no call at all.
    ensure!(queue.heartbeat_many(&[], None).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn poison_pill_ends_dead_after_max_attempts() -> Result<()> {
    let (_server, queue) = setup().await?;
    let id = queue
        .enqueue(b"{}".to_vec(), short_lease().max_attempts(3))
        .await?;
    // Three consumers each take it and vanish without a word, as a worker that
    // the job OOM-kills would.
    for attempt in 1..=3 {
        let job = queue.reserve(1, Duration::from_secs(2)).await?;
        ensure!(
            job.len() == 1 && job[0].attempt == attempt,
            "attempt {attempt}: {job:?}"
        );
        drop(job);
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    let report = queue.sweep(100).await?;
    ensure!(report.recovered == 1, "{report:?}");
    let info = queue.info(&id).await?;
    ensure!(info.state == JobState::Dead, "state {}", info.state);
    let reason = info.last_error.unwrap_or_default();
    ensure!(
        reason.contains("lease expired during attempt 3 of 3"),
        "{reason}"
    );
    let stats = queue.stats().await?;
    ensure!(
        stats.dead == 1 && stats.outstanding == 0 && stats.ready == 0,
        "{stats:?}"
    );
    Ok(())
}

#[tokio::test]
async fn retry_backoff_lands_in_scheduled_within_the_window() -> Result<()> {
    let (_server, queue) = setup().await?;
    let backoff = Duration::from_secs(4);
    let opts = JobOptions::default()
        .max_attempts(3)
        .backoff(backoff, Duration::from_secs(60));
    let id = queue.enqueue(b"{}".to_vec(), opts).await?;
    let job = queue.reserve(1, Duration::from_secs(1)).await?.remove(0);
    let before = now_ms();
    let state = queue.fail(&job, "transcoder busy").await?;
    ensure!(state == JobState::Scheduled);
    let info = queue.info(&id).await?;
    let run_at = info.run_at_ms.context("run_at")?;
    let cap = spool_queue::backoff_cap(backoff, Duration::from_secs(60), 1).as_millis() as u64;
    ensure!(
        run_at + 50 >= before && run_at <= now_ms() + cap,
        "run_at {run_at} outside [{before}, now + {cap}]"
    );
    ensure!(info.last_error.as_deref() == Some("transcoder busy"));
    let stats = queue.stats().await?;
    ensure!(stats.scheduled == 1 && stats.outstanding == 0, "{stats:?}");
    Ok(())
}

#[tokio::test]
async fn permanent_errors_go_dead_and_dead_jobs_retry_and_purge() -> Result<()> {
    let (_server, queue) = setup().await?;
    let a = queue.enqueue(b"a".to_vec(), JobOptions::default()).await?;
    let b = queue.enqueue(b"b".to_vec(), JobOptions::default()).await?;
    for job in queue.reserve(2, Duration::from_secs(1)).await? {
        let state = queue.fail_permanently(&job, "unsupported codec").await?;
        ensure!(state == JobState::Dead);
    }
    let dead = queue.dead_list(0, 10).await?;
    ensure!(dead.len() == 2);
    ensure!(
        dead.iter()
            .all(|j| j.last_error.as_deref() == Some("unsupported codec"))
    );

    ensure!(queue.dead_retry(std::slice::from_ref(&a), 0).await? == 1);
    let info = queue.info(&a).await?;
    ensure!(info.state == JobState::Ready && info.attempts == 0);
    ensure!(queue.dead_purge(&[], 100).await? == 1);
    ensure!(matches!(queue.info(&b).await, Err(Error::NotFound { .. })));
    let stats = queue.stats().await?;
    ensure!(
        stats.dead == 0 && stats.ready == 1 && stats.outstanding == 1,
        "{stats:?}"
    );
    Ok(())
}

#[tokio::test]
async fn retryable_failures_die_when_attempts_run_out() -> Result<()> {
    let (_server, queue) = setup().await?;
    let opts = JobOptions::default()
        .max_attempts(2)
        .backoff(Duration::from_millis(10), Duration::from_millis(10));
    let id = queue.enqueue(b"{}".to_vec(), opts).await?;
    let job = queue.reserve(1, Duration::from_secs(1)).await?.remove(0);
    ensure!(queue.fail(&job, "boom").await? == JobState::Scheduled);
    let job = queue.reserve(1, Duration::from_secs(2)).await?.remove(0);
    ensure!(job.attempt == 2);
    ensure!(queue.fail(&job, "boom").await? == JobState::Dead);
    let err = queue.info(&id).await?.last_error.unwrap_or_default();
    ensure!(err.contains("attempt 2 of 2"), "{err}");
    Ok(())
}

#[tokio::test]
async fn delayed_jobs_are_not_reserved_early() -> Result<()> {
    let (_server, queue) = setup().await?;
    let id = queue
        .enqueue(
            b"{}".to_vec(),
            JobOptions::default().delay(Duration::from_millis(600)),
        )
        .await?;
    ensure!(queue.info(&id).await?.state == JobState::Scheduled);
    let started = Instant::now();
    let r = queue.try_reserve(1).await?;
    let (early, hint) = (r.jobs, r.next_due);
    ensure!(early.is_empty(), "a delayed job was handed out early");
    ensure!(
        hint.is_some_and(|h| h <= Duration::from_millis(600)),
        "{hint:?}"
    );
    let jobs = queue.reserve(1, Duration::from_secs(5)).await?;
    ensure!(jobs.len() == 1 && jobs[0].id == id);
    ensure!(
        started.elapsed() >= Duration::from_millis(500),
        "reserved after {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn priorities_order_and_fifo_within_a_priority() -> Result<()> {
    let (_server, queue) = setup().await?;
    let jobs = [
        (0, "low-1"),
        (5, "high-1"),
        (0, "low-2"),
        (5, "high-2"),
        (-3, "lowest"),
    ]
    .map(|(p, name)| {
        NewJob::with_options(name.as_bytes().to_vec(), JobOptions::default().priority(p))
    });
    queue.enqueue_batch(jobs.to_vec()).await?;
    let got = queue.reserve(10, Duration::from_secs(1)).await?;
    let order: Vec<String> = got
        .iter()
        .map(|j| String::from_utf8_lossy(&j.payload).into_owned())
        .collect();
    ensure!(
        order == ["high-1", "high-2", "low-1", "low-2", "lowest"],
        "{order:?}"
    );
    Ok(())
}

#[tokio::test]
async fn released_jobs_go_to_the_front_without_attempt_penalty() -> Result<()> {
    let (_server, queue) = setup().await?;
    queue
        .enqueue(b"first".to_vec(), JobOptions::default())
        .await?;
    queue
        .enqueue(b"second".to_vec(), JobOptions::default())
        .await?;
    let a = queue.reserve(1, Duration::from_secs(1)).await?.remove(0);
    queue.release(&a).await?;
    let again = queue.reserve(1, Duration::from_secs(1)).await?.remove(0);
    ensure!(again.id == a.id, "a released job must come back first");
    ensure!(again.attempt == 1, "release must refund the attempt");
    Ok(())
}

#[tokio::test]
async fn dedup_key_returns_the_live_job() -> Result<()> {
    let (_server, queue) = setup().await?;
    let opts = || JobOptions::default().dedup_key("render:42");
    let first = queue.enqueue(b"{}".to_vec(), opts()).await?;
    let second = queue.enqueue(b"{}".to_vec(), opts()).await?;
    ensure!(first == second);
    ensure!(queue.stats().await?.ready == 1);
    let job = queue.reserve(1, Duration::from_secs(1)).await?.remove(0);
    queue.complete(&job, b"").await?;
    let third = queue.enqueue(b"{}".to_vec(), opts()).await?;
    ensure!(third != first, "a finished job frees its dedup key");
    // An explicit id makes a lost-reply retry safe.
    let x = queue
        .enqueue(b"{}".to_vec(), JobOptions::default().id("order-7"))
        .await?;
    let y = queue
        .enqueue(b"{}".to_vec(), JobOptions::default().id("order-7"))
        .await?;
    ensure!(x == "order-7" && y == "order-7");
    ensure!(queue.stats().await?.ready == 2);
    Ok(())
}

#[tokio::test]
async fn cancel_stops_queued_jobs_at_once_and_running_ones_at_heartbeat() -> Result<()> {
    let (_server, queue) = setup().await?;
    let queued = queue.enqueue(b"q".to_vec(), JobOptions::default()).await?;
    let delayed = queue
        .enqueue(
            b"d".to_vec(),
            JobOptions::default().delay(Duration::from_secs(60)),
        )
        .await?;
    ensure!(queue.cancel(&queued).await? == CancelOutcome::Cancelled);
    ensure!(queue.cancel(&delayed).await? == CancelOutcome::Cancelled);
    ensure!(
        queue.try_reserve(1).await?.jobs.is_empty(),
        "cancelled jobs must not run"
    );

    let running = queue.enqueue(b"r".to_vec(), JobOptions::default()).await?;
    let job = queue.reserve(1, Duration::from_secs(1)).await?.remove(0);
    ensure!(queue.cancel(&running).await? == CancelOutcome::Requested);
    let hb = queue.heartbeat(&job, None).await?;
    ensure!(
        hb.cancel_requested,
        "the worker must see the cancel at its heartbeat"
    );
    ensure!(queue.settle(&job, Settle::Cancelled).await? == JobState::Cancelled);
    ensure!(queue.cancel(&running).await? == CancelOutcome::AlreadyFinished(JobState::Cancelled));
    let stats = queue.stats().await?;
    ensure!(
        stats.cancelled == 3 && stats.outstanding == 0 && stats.active == 0,
        "{stats:?}"
    );
    ensure!(matches!(
        queue.cancel("nope").await,
        Err(Error::NotFound { .. })
    ));
    Ok(())
}

/// Reads ready, active and outstanding in one MULTI/EXEC, so the three are
/// from the same instant.
fn keda_snapshot(conn: &mut redis::Connection, queue: &Queue) -> Result<(u64, u64, u64)> {
    let k = queue.keys();
    let (ready, active, outstanding): (u64, u64, u64) = redis::pipe()
        .atomic()
        .cmd("ZCARD")
        .arg(&k.ready)
        .cmd("ZCARD")
        .arg(&k.active)
        .cmd("SCARD")
        .arg(&k.outstanding)
        .query(conn)?;
    Ok((ready, active, outstanding))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_consumers_complete_each_job_exactly_once() -> Result<()> {
    const JOBS: usize = 20_000;
    const CONSUMERS: usize = 8;
    let (server, queue) = setup().await?;
    let jobs: Vec<NewJob> = (0..JOBS).map(|i| NewJob::new(i.to_string())).collect();
    let ids = queue.enqueue_batch(jobs).await?;
    ensure!(ids.iter().collect::<HashSet<_>>().len() == JOBS);

    let held = Arc::new(Mutex::new(HashSet::<String>::new()));
    let done = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // A watcher checks the KEDA invariant while the consumers run.
    let watcher = {
        let mut conn = raw(&server)?;
        let queue = queue.clone();
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<usize> {
            let mut checks = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (ready, active, outstanding) = keda_snapshot(&mut conn, &queue)?;
                ensure!(
                    outstanding == ready + active,
                    "outstanding {outstanding} != ready {ready} + active {active}"
                );
                checks += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(checks)
        })
    };

    let mut tasks = Vec::new();
    for _ in 0..CONSUMERS {
        let queue = queue.clone();
        let held = held.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let jobs = queue.reserve(16, Duration::from_millis(200)).await?;
                if jobs.is_empty() {
                    return anyhow::Ok(());
                }
                {
                    let mut h = held.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    for j in &jobs {
                        ensure!(
                            h.insert(j.id.to_string()),
                            "job {} held by two consumers",
                            j.id
                        );
                    }
                }
                tokio::task::yield_now().await;
                {
                    let mut h = held.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    for j in &jobs {
                        h.remove(j.id.as_str());
                    }
                }
                let settled = queue
                    .settle_many(
                        jobs.iter()
                            .map(|j| (j, Settle::Complete(Vec::new())))
                            .collect(),
                    )
                    .await?;
                let mut d = done.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                for (j, r) in jobs.iter().zip(settled) {
                    ensure!(r? == JobState::Completed);
                    d.push(j.id.to_string());
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let checks = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))??;
    ensure!(checks > 0);

    let done = done
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    ensure!(
        done.len() == JOBS,
        "{} completions for {JOBS} jobs",
        done.len()
    );
    let unique: HashSet<&String> = done.iter().collect();
    ensure!(unique.len() == JOBS, "some job completed twice");
    let stats = queue.stats().await?;
    ensure!(stats.completed == JOBS as u64, "{stats:?}");
    ensure!(
        stats.ready == 0 && stats.outstanding == 0 && stats.active == 0,
        "KEDA keys not empty: {stats:?}"
    );
    Ok(())
}

#[tokio::test]
async fn blocked_reserve_wakes_promptly_and_idles_cheaply() -> Result<()> {
    let (server, queue) = setup().await?;
    let producer = queue.client().queue("test")?;
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let consumer = queue.clone();
        let waiter = tokio::spawn(async move {
            let jobs = consumer.reserve(1, Duration::from_secs(10)).await?;
            anyhow::Ok((Instant::now(), jobs))
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = Instant::now();
        producer
            .enqueue(b"{}".to_vec(), JobOptions::default())
            .await?;
        let (woke, jobs) = waiter.await??;
        ensure!(jobs.len() == 1);
        queue.complete(&jobs[0], b"").await?;
        latencies.push(woke - sent);
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    eprintln!("enqueue-to-reserve latencies: {latencies:?}");
    ensure!(
        median < Duration::from_millis(50),
        "median wake-up {median:?}"
    );

    // An idle consumer: count what it sends Redis in three seconds.
    let mut conn = raw(&server)?;
    let consumer = queue.clone();
    let idle = tokio::spawn(async move { consumer.reserve(1, Duration::from_secs(3)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut conn)?;
    let got = idle.await??;
    ensure!(got.is_empty());
    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut conn)?;
    // commandstats also counts the commands scripts run inside Redis; what the
    // consumer sends over the wire is its script calls and its blocking waits.
    let calls: u64 = stats
        .lines()
        .filter(|l| {
            ["cmdstat_evalsha:", "cmdstat_eval:", "cmdstat_blpop:"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    eprintln!("idle consumer sent {calls} commands in ~2.9 s:\n{stats}");
    ensure!(calls <= 10, "an idle consumer sent {calls} commands in 3 s");
    Ok(())
}

#[tokio::test]
async fn redis_sigkill_and_restart_loses_no_job() -> Result<()> {
    let (mut server, queue) = setup().await?;
    let jobs: Vec<NewJob> = (0..500)
        .map(|i| NewJob::with_options(i.to_string(), short_lease()))
        .collect();
    let ids = queue.enqueue_batch(jobs).await?;
    let in_flight = queue.reserve(1, Duration::from_secs(1)).await?.remove(0);

    server.kill();
    ensure!(
        queue.stats().await.is_err_and(|e| e.is_transient()),
        "a dead Redis must read as transient"
    );
    server.restart()?;

    // The client reconnects by itself; allow it a moment.
    let mut stats = None;
    for _ in 0..50 {
        match queue.stats().await {
            Ok(s) => {
                stats = Some(s);
                break;
            }
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return Err(e.into()),
        }
    }
    let stats = stats.context("the client never reconnected")?;
    ensure!(
        stats.ready == 499 && stats.active == 1 && stats.outstanding == 500,
        "{stats:?}"
    );

    // The in-flight job comes back once its lease expires.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut seen = HashSet::new();
    loop {
        let jobs = queue.reserve(100, Duration::from_millis(500)).await?;
        if jobs.is_empty() {
            break;
        }
        for j in &jobs {
            seen.insert(j.id.clone());
            if j.id == in_flight.id {
                ensure!(
                    j.attempt == 2,
                    "the recovered job is on attempt {}",
                    j.attempt
                );
            }
        }
        for r in queue
            .settle_many(
                jobs.iter()
                    .map(|j| (j, Settle::Complete(Vec::new())))
                    .collect(),
            )
            .await?
        {
            r?;
        }
    }
    ensure!(
        seen.len() == ids.len(),
        "{} of {} jobs came back",
        seen.len(),
        ids.len()
    );
    Ok(())
}

#[tokio::test]
async fn unreachable_redis_gives_an_actionable_error() -> Result<()> {
    let port = spool_testkit::free_port()?;
    let url = format!("redis://spool:hunter2@127.0.0.1:{port}");
    let err = Client::connect(&url)
        .await
        .err()
        .context("connect must fail")?;
    let msg = err.to_string();
    ensure!(err.is_transient(), "{msg}");
    ensure!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("SPOOL_REDIS_URL"),
        "{msg}"
    );
    ensure!(!msg.contains("hunter2"), "the password leaked: {msg}");
    Ok(())
}

#[tokio::test]
async fn garbage_in_the_keys_gives_errors_not_panics() -> Result<()> {
    let (server, queue) = setup().await?;
    let mut conn = raw(&server)?;
    let k = queue.keys().clone();
    // A job hash without a state, one with a non-numeric field, an id in the
    // backlog without a hash, and one whose hash has no payload.
    let _: () = redis::cmd("HSET")
        .arg(k.job("nostate"))
        .arg("payload")
        .arg("{}")
        .query(&mut conn)?;
    let _: () = redis::cmd("HSET")
        .arg(k.job("badnum"))
        .arg("state")
        .arg("ready")
        .arg("attempts")
        .arg("many")
        .query(&mut conn)?;
    let _: () = redis::cmd("ZADD")
        .arg(&k.ready)
        .arg(1)
        .arg("ghost")
        .query(&mut conn)?;
    let _: () = redis::cmd("SADD")
        .arg(&k.outstanding)
        .arg("ghost")
        .query(&mut conn)?;
    let _: () = redis::cmd("HSET")
        .arg(k.job("nopayload"))
        .arg("state")
        .arg("ready")
        .query(&mut conn)?;
    let _: () = redis::cmd("ZADD")
        .arg(&k.ready)
        .arg(2)
        .arg("nopayload")
        .query(&mut conn)?;
    let _: () = redis::cmd("SADD")
        .arg(&k.outstanding)
        .arg("nopayload")
        .query(&mut conn)?;

    for id in ["nostate", "badnum"] {
        match queue.info(id).await {
            Err(e @ Error::Corrupt { .. }) => ensure!(e.to_string().contains(&k.job(id))),
            other => bail!("{id}: expected a Corrupt error, got {other:?}"),
        }
    }
    let jobs = queue.try_reserve(10).await?.jobs;
    ensure!(
        jobs.is_empty(),
        "garbage must not be handed to a worker: {jobs:?}"
    );
    let info = queue.info("nopayload").await?;
    ensure!(info.state == JobState::Dead);
    ensure!(info.last_error.unwrap_or_default().contains("no payload"));
    let stats = queue.stats().await?;
    ensure!(stats.outstanding == 0 && stats.ready == 0, "{stats:?}");

    // A wrong type where the backlog should be: a Redis error, not a panic.
    let other = queue.client().queue("wrongtype")?;
    let _: () = redis::cmd("SET")
        .arg(&other.keys().ready)
        .arg("x")
        .query(&mut conn)?;
    match other.try_reserve(1).await {
        Err(e @ Error::Redis { .. }) => ensure!(e.to_string().contains("WRONGTYPE"), "{e}"),
        other => bail!("expected a Redis error, got {other:?}"),
    }

    // A FIFO counter past what a score holds exactly: refused, nothing
    // written, and the key named; a counter of sane size works on.
    let seq = queue.client().queue("bigseq")?;
    for (value, ok) in [
        ("99999999999999999999", false),
        ("1000000000000000", false),
        ("41", true),
    ] {
        let _: () = redis::cmd("SET")
            .arg(&seq.keys().seq)
            .arg(value)
            .query(&mut conn)?;
        let r = seq
            .enqueue_batch(vec![NewJob::new("{}"), NewJob::new("{}")])
            .await;
        let stats = seq.stats().await?;
        if ok {
            ensure!(
                r.is_ok() && stats.ready == 2,
                "seq {value}: {r:?} {stats:?}"
            );
            let next: String = redis::cmd("GET").arg(&seq.keys().seq).query(&mut conn)?;
            ensure!(next == "43", "seq {value} became {next}");
        } else {
            let e = r.err().map(|e| e.to_string()).unwrap_or_default();
            ensure!(
                e.contains(&seq.keys().seq) && e.contains("not a counter"),
                "seq {value}: {e}"
            );
            ensure!(stats.ready == 0, "seq {value}: {stats:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn cluster_queues_on_different_masters_all_work() -> Result<()> {
    let cluster = RedisCluster::start(3)?;
    let client = Client::connect(&cluster.url()).await?;
    // Pick queue names until three land on three different masters.
    let mut by_port = std::collections::BTreeMap::new();
    for i in 0..200 {
        let name = format!("q{i}");
        let port = cluster.port_for_key(&format!("{{{name}}}"))?;
        by_port.entry(port).or_insert(name);
        if by_port.len() == 3 {
            break;
        }
    }
    ensure!(
        by_port.len() == 3,
        "could not spread queues over the masters"
    );
    for name in by_port.values() {
        let queue = client.queue(name)?;
        let ids = queue
            .enqueue_batch((0..50).map(|i| NewJob::new(i.to_string())).collect())
            .await?;
        let mut done = 0;
        while done < ids.len() {
            let jobs = queue.reserve(20, Duration::from_secs(2)).await?;
            ensure!(!jobs.is_empty(), "queue {name} stalled at {done}");
            for j in &jobs {
                queue.complete(j, b"").await?;
            }
            done += jobs.len();
        }
        let stats = queue.stats().await?;
        ensure!(
            stats.completed == 50 && stats.outstanding == 0,
            "{name}: {stats:?}"
        );
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The raw protocol (what a producer in another language sends) with
/// impossible numbers is refused before anything is written; a damaged job
/// among ready ones goes dead with the reason and the others run.
#[tokio::test]
async fn bad_script_arguments_change_nothing_and_damaged_jobs_strand_nothing() -> Result<()> {
    let (server, queue) = setup().await?;
    let k = queue.keys().clone();
    let mut conn = raw(&server)?;
    let enqueue = redis::Script::new(concat!(
        include_str!("../src/scripts/lib.lua"),
        include_str!("../src/scripts/lib_enqueue.lua"),
        include_str!("../src/scripts/enqueue.lua")
    ));
    let keys = k.script_keys();
    // id, payload, priority, delay_ms, max_attempts, backoff_ms, backoff_max_ms,
    // lease_ms, retention_s, dedup
    let good = ["ok1", "{}", "0", "0", "3", "10", "100", "30000", "60", ""];
    // The 10-field entries older producers send, then the 12-field ones
    // spool-queue sends (with the two time-limit fields), each with one
    // field made impossible in the second entry: refused whole.
    let mut good12 = good.to_vec();
    good12.extend(["1000", ""]);
    let cases = [
        (7, "nan"),
        (7, "0"),
        (7, "inf"),
        (2, "1001"),
        (2, "1.5"),
        (3, "-1"),
        (4, "0"),
        (8, "99999999999"),
        (0, ""),
    ]
    .map(|(f, v)| (&good[..], f, v, "spool: invalid"))
    .into_iter()
    .chain(
        [(10, "-5"), (10, "2678400001"), (11, "yes"), (11, "2")]
            .map(|(f, v)| (&good12[..], f, v, "spool: invalid timeout")),
    );
    for (first, field, value, want) in cases {
        let mut second = first.to_vec();
        second[0] = "bad";
        second[field] = value;
        let mut inv = enqueue.prepare_invoke();
        for key in keys {
            inv.key(key);
        }
        inv.arg(&k.prefix)
            .arg("test")
            .arg(2)
            .arg(first)
            .arg(&second[..]);
        let r: redis::RedisResult<Vec<String>> = inv.invoke(&mut conn);
        let e = r
            .err()
            .with_context(|| format!("field {field} = {value:?} was accepted"))?;
        ensure!(e.to_string().contains(want), "{e}");
        let n: u64 = redis::cmd("SCARD").arg(&k.outstanding).query(&mut conn)?;
        let exists: bool = redis::cmd("EXISTS").arg(k.job("ok1")).query(&mut conn)?;
        ensure!(n == 0 && !exists, "a refused call wrote something");
    }

    // Three ready jobs; the middle one's lease is damaged, the last one's key
    // is not a hash at all.
    let ids = queue
        .enqueue_batch(
            (0..3)
                .map(|_| NewJob::with_options(b"{}".to_vec(), JobOptions::default()))
                .collect(),
        )
        .await?;
    let _: () = redis::cmd("HSET")
        .arg(k.job(&ids[1]))
        .arg("lease_ms")
        .arg("nan")
        .query(&mut conn)?;
    let _: () = redis::cmd("DEL").arg(k.job(&ids[2])).query(&mut conn)?;
    let _: () = redis::cmd("SET")
        .arg(k.job(&ids[2]))
        .arg("oops")
        .query(&mut conn)?;
    let jobs = queue.try_reserve(10).await?.jobs;
    ensure!(
        jobs.len() == 1 && jobs[0].id == ids[0],
        "only the sound job runs: {jobs:?}"
    );
    let damaged = queue.info(&ids[1]).await?;
    ensure!(damaged.state == JobState::Dead, "{damaged:?}");
    ensure!(
        damaged
            .last_error
            .unwrap_or_default()
            .contains("field lease_ms is \"nan\"")
    );
    let wrong = queue.info(&ids[2]).await?;
    ensure!(wrong.state == JobState::Dead, "{wrong:?}");
    let aside: String = redis::cmd("GET")
        .arg(format!("{}corrupt:{}", k.prefix, ids[2]))
        .query(&mut conn)?;
    ensure!(aside == "oops", "the damaged value was not kept aside");
    let stats = queue.stats().await?;
    ensure!(
        stats.outstanding == 1 && stats.active == 1 && stats.ready == 0 && stats.dead == 2,
        "{stats:?}"
    );
    Ok(())
}

/// A reserve call stops at its byte budget (the first job always goes).
#[tokio::test]
async fn reserve_is_capped_by_bytes_as_well_as_count() -> Result<()> {
    let server = RedisServer::start()?;
    let client = Client::connect_with(
        &server.url(),
        ClientOptions::default().with_max_reserve_bytes(250_000),
    )
    .await?;
    let queue = client.queue("bytes")?;
    let payload = vec![b'x'; 100_000];
    queue
        .enqueue_batch(
            (0..10)
                .map(|_| NewJob::with_options(payload.clone(), JobOptions::default()))
                .collect(),
        )
        .await?;
    let jobs = queue.try_reserve(10).await?.jobs;
    ensure!(
        jobs.len() == 2,
        "took {} jobs of 100 kB with a 250 kB budget",
        jobs.len()
    );
    let jobs = queue.try_reserve(10).await?.jobs;
    ensure!(jobs.len() == 2);
    let big = client.queue("big")?;
    big.enqueue(vec![b'y'; 400_000], JobOptions::default())
        .await?;
    let jobs = big.try_reserve(10).await?.jobs;
    ensure!(jobs.len() == 1, "a job over the budget must still go alone");
    Ok(())
}

/// A dead job retried after a newer job took its dedup key comes back without
/// the key: one key never names two live jobs.
#[tokio::test]
async fn dead_retry_never_gives_one_dedup_key_two_live_jobs() -> Result<()> {
    let (_server, queue) = setup().await?;
    let opts = || JobOptions::default().dedup_key("clip-42");
    let a = queue.enqueue(b"{}".to_vec(), opts()).await?;
    let jobs = queue.try_reserve(1).await?.jobs;
    let job = jobs.first().context("nothing reserved")?;
    queue.fail_permanently(job, "bad input").await?;
    ensure!(queue.info(&a).await?.state == JobState::Dead);
    // The key is free once A is dead: B takes it.
    let b = queue.enqueue(b"{}".to_vec(), opts()).await?;
    ensure!(b != a, "the dead job's key was not freed");
    ensure!(queue.dead_retry(std::slice::from_ref(&a), 10).await? == 1);
    let info = queue.info(&a).await?;
    ensure!(info.state == JobState::Ready, "{info:?}");
    ensure!(
        info.dedup_key.is_none(),
        "A came back holding B's key: {info:?}"
    );
    // The key still names B, and only B.
    ensure!(queue.enqueue(b"{}".to_vec(), opts()).await? == b);
    // Without a competitor, a retried job takes its key back.
    let jobs = queue.try_reserve(10).await?.jobs;
    for j in &jobs {
        queue.fail_permanently(j, "again").await?;
    }
    ensure!(queue.dead_retry(std::slice::from_ref(&b), 10).await? == 1);
    ensure!(queue.info(&b).await?.dedup_key.as_deref() == Some("clip-42"));
    ensure!(queue.enqueue(b"{}".to_vec(), opts()).await? == b);
    Ok(())
}

#[tokio::test]
async fn an_embedders_deadpool_pool_serves_the_blocking_waits() -> Result<()> {
    use spool_queue::deadpool_redis;
    let server = RedisServer::start()?;
    // One connection for three waiting consumers: two of them poll.
    let pool = deadpool_redis::Config::from_url(server.url())
        .builder()?
        .max_size(1)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()?;
    let client =
        Client::connect_with_pool(&server.url(), ClientOptions::default(), pool.clone()).await?;
    let queue = client.queue("pooled")?;
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let q = queue.clone();
            tokio::spawn(async move { q.reserve(1, Duration::from_secs(10)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        pool.status().size == 1,
        "the pool grew past its bound: {:?}",
        pool.status()
    );
    let mut mine = raw(&server)?;
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut mine)?;
    let blocked = clients.lines().filter(|l| l.contains("cmd=blpop")).count();
    ensure!(blocked == 1, "expected one BLPOP, got:\n{clients}");

    for i in 0..3 {
        queue.enqueue(format!("{i}"), JobOptions::default()).await?;
    }
    let mut got = Vec::new();
    for w in waiters {
        let jobs = tokio::time::timeout(Duration::from_secs(5), w).await???;
        ensure!(jobs.len() == 1, "each waiter gets one job: {jobs:?}");
        got.push(jobs[0].payload.clone());
    }
    got.sort();
    ensure!(
        got == [b"0".to_vec(), b"1".to_vec(), b"2".to_vec()],
        "{got:?}"
    );

    // A Redis restart costs the pooled connection; the next wait reconnects.
    let mut server = server;
    server.kill();
    server.restart()?;
    let q = queue.clone();
    let waiter = tokio::spawn(async move {
        loop {
            match q.reserve(1, Duration::from_secs(5)).await {
                Ok(jobs) => return anyhow::Ok(jobs),
                Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => return Err(e.into()),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    queue.enqueue("after", JobOptions::default()).await?;
    let jobs = tokio::time::timeout(Duration::from_secs(10), waiter).await???;
    ensure!(jobs.len() == 1 && jobs[0].payload == b"after", "{jobs:?}");
    Ok(())
}

#[tokio::test]
async fn a_pool_is_refused_for_a_cluster_url() -> Result<()> {
    use spool_queue::deadpool_redis;
    let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:1")
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
    let err = Client::connect_with_pool("redis://a:1,b:2", ClientOptions::default(), pool)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(err.contains("single server"), "{err}");
    Ok(())
}

/// Pause: nothing is leased, enqueues are accepted, running jobs settle as
/// usual (a released one stays held), both keys KEDA reads fall to the
/// running jobs and then to 0, and a cancel reaches a held job. Resume: the
/// backlog comes back in its order (priority, then FIFO, released job at the
/// front of its priority), ahead of a job enqueued after the resume at the
/// same priority. A pause cut short (one move of a few jobs, as a client
/// killed between calls leaves it) is finished by the next reserve.
#[tokio::test]
async fn pause_holds_the_backlog_outside_the_keda_keys_and_resume_keeps_its_order() -> Result<()> {
    let (server, queue) = setup().await?;
    let mut conn = raw(&server)?;
    // 30 jobs over three priorities, named in the order they must run.
    let mut jobs = Vec::new();
    for i in 0..30 {
        let prio = [0, 5, -2][i % 3];
        jobs.push(NewJob::with_options(
            format!("p{prio}-{i:02}").into_bytes(),
            JobOptions::default().priority(prio),
        ));
    }
    queue.enqueue_batch(jobs).await?;
    let running = queue.try_reserve(2).await?.jobs;
    ensure!(running.len() == 2, "{running:?}");

    let s = queue.pause().await?;
    ensure!(
        s.paused && s.parked == 28 && s.ready == 0 && s.active == 2,
        "{s:?}"
    );
    ensure!(
        keda_snapshot(&mut conn, &queue)? == (0, 2, 2),
        "ready, active, outstanding while two run"
    );
    ensure!(
        queue.try_reserve(10).await?.jobs.is_empty(),
        "leased while paused"
    );
    let late = queue
        .enqueue(b"p5-late".to_vec(), JobOptions::default().priority(5))
        .await?;
    let gone = queue
        .enqueue(b"p9-cancelled".to_vec(), JobOptions::default().priority(9))
        .await?;
    ensure!(queue.cancel(&gone).await? == CancelOutcome::Cancelled);
    ensure!(queue.info(&late).await?.state == JobState::Ready);
    // One running job completes, the other is released (drain): held too.
    queue.complete(&running[0], b"").await?;
    queue.release(&running[1]).await?;
    ensure!(
        keda_snapshot(&mut conn, &queue)? == (0, 0, 0),
        "both KEDA keys read 0 once the running jobs ended"
    );
    let stats = queue.stats().await?;
    ensure!(stats.paused && stats.parked == 30, "{stats:?}");
    ensure!(queue.check(false).await?.findings.is_empty());
    // Idempotent: a second pause keeps the first one's time.
    let again = queue.pause().await?;
    ensure!(again.paused_at_ms == s.paused_at_ms, "{again:?} vs {s:?}");

    queue.resume().await?;
    let after = queue
        .enqueue(
            b"p5-after-resume".to_vec(),
            JobOptions::default().priority(5),
        )
        .await?;
    let mut order = Vec::new();
    loop {
        let got = queue.try_reserve(7).await?.jobs;
        if got.is_empty() {
            break;
        }
        for j in got {
            order.push(String::from_utf8_lossy(&j.payload).into_owned());
            queue.complete(&j, b"").await?;
        }
    }
    let released = String::from_utf8_lossy(&running[1].payload).into_owned();
    let mut want: Vec<String> = Vec::new();
    for prio in [5, 0, -2] {
        let tag = format!("p{prio}-");
        if released.starts_with(&tag) {
            want.push(released.clone());
        }
        let mut rest: Vec<String> = (0..30)
            .filter(|i| [0, 5, -2][i % 3] == prio)
            .map(|i| format!("p{prio}-{i:02}"))
            .filter(|n| *n != released && *n != String::from_utf8_lossy(&running[0].payload))
            .collect();
        rest.sort();
        want.extend(rest);
        if prio == 5 {
            want.push("p5-late".into());
            want.push("p5-after-resume".into());
        }
    }
    ensure!(order == want, "ran {order:?}\nwanted {want:?}");
    ensure!(queue.info(&after).await?.state == JobState::Completed);

    // A pause cut short: the flag set and only 3 of 20 moved (the script
    // called directly with a limit of 3, as a client killed after its first
    // call leaves it). The next reserve finishes the move and leases
    // nothing; a resume cut short is finished the same way.
    let ids = queue
        .enqueue_batch((0..20).map(|_| NewJob::new(b"x".to_vec())).collect())
        .await?;
    let pause = redis::Script::new(concat!(
        include_str!("../src/scripts/lib.lua"),
        include_str!("../src/scripts/pause.lua")
    ));
    let partial = |action: &'static str| {
        let mut inv = pause.prepare_invoke();
        for key in queue.keys().script_keys() {
            inv.key(key);
        }
        inv.arg(&queue.keys().prefix).arg(action).arg(3);
        inv
    };
    let _: Vec<u64> = partial("pause").invoke(&mut conn)?;
    ensure!(keda_snapshot(&mut conn, &queue)? == (17, 0, 17));
    ensure!(queue.try_reserve(5).await?.jobs.is_empty());
    ensure!(keda_snapshot(&mut conn, &queue)? == (0, 0, 0));
    let _: Vec<u64> = partial("resume").invoke(&mut conn)?;
    let got = queue.try_reserve(20).await?.jobs;
    ensure!(
        got.len() == 20,
        "{} of 20 after a resume cut short",
        got.len()
    );
    ensure!(got.iter().map(|j| &j.id).eq(ids.iter()), "FIFO kept");
    Ok(())
}

/// A job's log lives exactly as long as the job: kept with a dead job until
/// it is purged, given a cancelled job's retention, deleted with a job of
/// retention 0, and never written for a job that no longer exists.
#[tokio::test]
async fn a_jobs_log_ends_with_the_job() -> Result<()> {
    let (server, queue) = setup().await?;
    let mut conn = raw(&server)?;
    let line = |m: &str| spool_queue::LogLine::now(spool_queue::LogLevel::Warning, m);
    let log_key = |id: &str| format!("{}log:{id}", queue.keys().prefix);
    let pttl = |conn: &mut redis::Connection, id: &str| -> Result<i64> {
        Ok(redis::cmd("PTTL").arg(log_key(id)).query(conn)?)
    };

    let dead = queue.enqueue(b"{}".to_vec(), JobOptions::default()).await?;
    let job = queue.try_reserve(1).await?.jobs.remove(0);
    ensure!(queue.append_log(&dead, &[line("a"), line("b")]).await? == 2);
    queue.fail_permanently(&job, "broken").await?;
    ensure!(pttl(&mut conn, &dead)? == -1, "a dead job's log stays");
    ensure!(queue.job_log(&dead).await?.len() == 2);
    ensure!(queue.dead_purge(std::slice::from_ref(&dead), 10).await? == 1);
    ensure!(pttl(&mut conn, &dead)? == -2, "purged with the job");

    let cancelled = queue
        .enqueue(
            b"{}".to_vec(),
            JobOptions::default().retention(Duration::from_secs(60)),
        )
        .await?;
    queue.append_log(&cancelled, &[line("c")]).await?;
    ensure!(queue.cancel(&cancelled).await? == CancelOutcome::Cancelled);
    // Retained: no TTL of its own; the cancelled index holds its expiry.
    ensure!(pttl(&mut conn, &cancelled)? == -1);
    let expiry: f64 = redis::cmd("ZSCORE")
        .arg(&queue.keys().cancelled)
        .arg(cancelled.as_str())
        .query(&mut conn)?;
    let left = expiry - now_ms() as f64;
    ensure!(
        left > 0.0 && left <= 60_000.0,
        "the cancelled job's retention: {left} ms left"
    );
    // A sweep after the retention deletes the job and its log together.
    let brief = queue
        .enqueue(
            b"{}".to_vec(),
            JobOptions::default().retention(Duration::from_secs(1)),
        )
        .await?;
    queue.append_log(&brief, &[line("b")]).await?;
    ensure!(queue.cancel(&brief).await? == CancelOutcome::Cancelled);
    ensure!(
        queue.sweep(100).await?.pruned == 0,
        "pruned before its time"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ensure!(queue.sweep(100).await?.pruned == 1);
    ensure!(matches!(
        queue.info(&brief).await,
        Err(Error::NotFound { .. })
    ));
    ensure!(pttl(&mut conn, &brief)? == -2, "its log went with it");
    ensure!(queue.info(&cancelled).await.is_ok(), "the other one stays");

    let gone = queue
        .enqueue(
            b"{}".to_vec(),
            JobOptions::default().retention(Duration::ZERO),
        )
        .await?;
    let job = queue.try_reserve(1).await?.jobs.remove(0);
    queue.append_log(&gone, &[line("d")]).await?;
    queue.complete(&job, b"").await?;
    ensure!(
        pttl(&mut conn, &gone)? == -2,
        "deleted with a job of retention 0"
    );
    ensure!(
        queue.append_log(&gone, &[line("late")]).await? == 0,
        "a log line for a job that is gone is not written"
    );
    ensure!(pttl(&mut conn, &gone)? == -2);
    Ok(())
}

#[tokio::test]
async fn every_failed_attempt_and_every_minute_is_recorded() -> Result<()> {
    let (server, queue) = setup().await?;
    let opts = JobOptions::default()
        .max_attempts(3)
        .lease(Duration::from_secs(2))
        .backoff(Duration::from_millis(1), Duration::from_millis(1));
    let id = queue.enqueue(b"{}".to_vec(), opts).await?;
    let ok = queue.enqueue(b"{}".to_vec(), JobOptions::default()).await?;

    let job = queue.reserve(1, Duration::from_secs(1)).await?.remove(0);
    ensure!(job.id == id);
    ensure!(queue.fail(&job, "boom 1").await? == JobState::Scheduled);
    // A long error of two-byte characters: cut on a character boundary.
    let long = "é".repeat(3000);
    // Both jobs, whichever reserve each comes in (the retry may not be due
    // yet when the other one is leased).
    let mut job = Vec::new();
    for _ in 0..50 {
        job.extend(queue.reserve(2, Duration::from_millis(200)).await?);
        if job.iter().any(|j| j.id == id) {
            break;
        }
    }
    for j in &job {
        if j.id == ok {
            queue.complete(j, b"{}").await?;
        }
    }
    let second = job.iter().find(|j| j.id == id).context("second attempt")?;
    ensure!(second.attempt == 2);
    ensure!(queue.fail(second, &long).await? == JobState::Scheduled);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let third = queue.reserve(1, Duration::from_secs(2)).await?.remove(0);
    ensure!(third.attempt == 3);
    // The third attempt's worker vanishes: its lease expires.
    drop(third);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    ensure!(queue.sweep(100).await?.recovered == 1);

    let info = queue.info(&id).await?;
    ensure!(info.state == JobState::Dead, "state {}", info.state);
    let f = &info.failures;
    ensure!(f.len() == 3, "{f:?}");
    ensure!(
        f.iter().map(|x| x.attempt).collect::<Vec<_>>() == [1, 2, 3],
        "{f:?}"
    );
    ensure!(f[0].error == "boom 1", "{:?}", f[0].error);
    ensure!(
        f[1].error.len() <= 2003 && f[1].error.ends_with("é...") && f[1].error.starts_with("éé"),
        "cut at {} bytes",
        f[1].error.len()
    );
    ensure!(f[2].error.contains("lease expired during attempt 3 of 3"));
    for x in f {
        ensure!(x.started_at_ms > 0 && x.started_at_ms <= x.at_ms, "{x:?}");
    }
    ensure!(queue.info(&ok).await?.failures.is_empty());

    let minutes = queue.history().await?;
    let sum = |g: fn(&spool_queue::Minute) -> u64| minutes.iter().map(g).sum::<u64>();
    ensure!(sum(|m| m.completed) == 1, "{minutes:?}");
    ensure!(sum(|m| m.failed) == 3, "{minutes:?}");
    ensure!(sum(|m| m.dead) == 1, "{minutes:?}");
    ensure!(sum(|m| m.started) == 4, "{minutes:?}");
    ensure!(minutes.iter().all(|m| m.at_ms % 60_000 == 0), "{minutes:?}");

    // Damaged history reads as none; the next failure starts it afresh.
    let mut conn = raw(&server)?;
    let jk = queue.keys().job(&id);
    redis::cmd("HSET")
        .arg(&jk)
        .arg("failures")
        .arg("not json")
        .query::<()>(&mut conn)?;
    redis::cmd("HSET")
        .arg(format!("{}minutes", queue.keys().prefix))
        .arg("7")
        .arg("garbage")
        .query::<()>(&mut conn)?;
    ensure!(queue.info(&id).await?.failures.is_empty());
    ensure!(queue.history().await? == minutes);
    ensure!(queue.dead_retry(std::slice::from_ref(&id), 0).await? == 1);
    let again = queue.reserve(1, Duration::from_secs(2)).await?.remove(0);
    queue.fail_permanently(&again, "still broken").await?;
    let f = queue.info(&id).await?.failures;
    ensure!(f.len() == 1 && f[0].error == "still broken", "{f:?}");
    Ok(())
}

/// The events stream's entries as (job, event, data).
fn events(conn: &mut redis::Connection, queue: &Queue) -> Result<Vec<(String, String, String)>> {
    let key = format!("{}events", queue.keys().prefix);
    let raw: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query(conn)?;
    Ok(raw
        .into_iter()
        .map(|(_, fields)| {
            let get = |k: &str| {
                fields
                    .iter()
                    .find(|(f, _)| f == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (get("job"), get("event"), get("data"))
        })
        .collect())
}

#[tokio::test]
async fn events_are_written_only_while_someone_listens() -> Result<()> {
    let (server, queue) = setup().await?;
    let mut conn = raw(&server)?;
    let quick = JobOptions::default().backoff(Duration::from_millis(1), Duration::from_millis(1));
    let reserve_one = async |id: &spool_queue::JobId| -> Result<spool_queue::ReservedJob> {
        for _ in 0..100 {
            if let Some(j) = queue
                .reserve(1, Duration::from_millis(100))
                .await?
                .into_iter()
                .next()
            {
                ensure!(&j.id == id, "reserved {} instead of {id}", j.id);
                return Ok(j);
            }
        }
        bail!("{id} never came")
    };

    // Nobody listens: a job fails once and completes, and nothing is written.
    let a = queue.enqueue(b"{}".to_vec(), quick.clone()).await?;
    let j = reserve_one(&a).await?;
    queue.fail(&j, "flaky").await?;
    let j = reserve_one(&a).await?;
    queue.complete(&j, b"{\"ok\":1}").await?;
    ensure!(events(&mut conn, &queue)?.is_empty());

    // A watched job (notify=1, as watch.lua sets it): its own events only.
    let b = queue.enqueue(b"{}".to_vec(), quick.clone()).await?;
    let (state, last) = queue.watch(&b).await?;
    ensure!(state == JobState::Ready && last == "0-0", "{state} {last}");
    ensure!(matches!(
        queue.watch("no-such-job").await,
        Err(Error::NotFound { .. })
    ));
    let jb = reserve_one(&b).await?;
    queue.heartbeat(&jb, Some("{\"percent\":50}")).await?;
    queue.fail(&jb, "flaky").await?;
    let jb = reserve_one(&b).await?;
    queue.complete(&jb, b"{\"out\":\"b.mp4\"}").await?;
    let c = queue.enqueue(b"{}".to_vec(), quick.clone()).await?;
    let jc = reserve_one(&c).await?;
    queue.complete(&jc, b"{}").await?;
    let got = events(&mut conn, &queue)?;
    let want = [
        (b.to_string(), "progress", "{\"percent\":50}"),
        (b.to_string(), "failed", "flaky"),
        (b.to_string(), "completed", "{\"out\":\"b.mp4\"}"),
    ];
    ensure!(
        got.len() == want.len()
            && got
                .iter()
                .zip(&want)
                .all(|(g, w)| g.0 == w.0 && g.1 == w.1 && g.2 == w.2),
        "{got:?}"
    );

    // A queue subscriber: every job's end, also a cancel and a death, and
    // a result deleted with its job (retention 0) is still in its event.
    redis::cmd("SET")
        .arg(format!("{}listening", queue.keys().prefix))
        .arg("1")
        .arg("PX")
        .arg(30_000)
        .query::<()>(&mut conn)?;
    let d = queue.enqueue(b"{}".to_vec(), quick.clone()).await?;
    let jd = reserve_one(&d).await?;
    queue.fail_permanently(&jd, "corrupt input").await?;
    let e = queue.enqueue(b"{}".to_vec(), quick.clone()).await?;
    queue.cancel(&e).await?;
    let f = queue
        .enqueue(b"{}".to_vec(), quick.clone().retention(Duration::ZERO))
        .await?;
    let jf = reserve_one(&f).await?;
    queue.complete(&jf, b"{\"gone\":true}").await?;
    ensure!(matches!(queue.info(&f).await, Err(Error::NotFound { .. })));
    let got = events(&mut conn, &queue)?;
    let tail: Vec<_> = got[3..]
        .iter()
        .map(|(j, e, d)| (j.as_str(), e.as_str(), d.as_str()))
        .collect();
    ensure!(
        tail == [
            (d.as_str(), "dead", "corrupt input"),
            (e.as_str(), "cancelled", ""),
            (f.as_str(), "completed", "{\"gone\":true}"),
        ],
        "{tail:?}"
    );
    // read_events gives the same, decoded, and waits no longer than asked.
    let all = queue.read_events("0-0", Duration::ZERO, 100).await?;
    ensure!(
        all.len() == got.len()
            && all
                .iter()
                .zip(&got)
                .all(|(a, g)| a.job == g.0 && a.event == g.1),
        "{all:?}"
    );
    ensure!(
        all[2].is_end() && all[2].data == Some(serde_json::json!({"out": "b.mp4"})),
        "{:?}",
        all[2]
    );
    // Each event names its attempt: b failed once and completed on its
    // second, f completed on its first.
    let attempts: Vec<u32> = all.iter().map(|e| e.attempt).collect();
    ensure!(attempts == [1, 1, 2, 1, 0, 1], "{attempts:?}");
    let last = all.last().map(|e| e.id.clone()).unwrap_or_default();
    let quiet = queue
        .read_events(&last, Duration::from_millis(200), 10)
        .await?;
    ensure!(quiet.is_empty(), "{quiet:?}");
    Ok(())
}
