//! Redis under memory pressure: with `maxmemory-policy noeviction` a full
//! Redis refuses enqueues with a clear error while jobs already held still
//! heartbeat and settle, and nothing is half written; with an evicting
//! policy a worker refuses to start, naming the policy.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use spool_queue::{Client, Error, JobOptions, NewJob, Settle};
use spool_testkit::{RedisServer, ServerOptions, WorkerProcess, example_binary};

fn server(policy: &str, maxmemory: &str) -> Result<RedisServer> {
    Ok(RedisServer::start_with(ServerOptions {
        extra_args: vec![
            "--maxmemory".into(),
            maxmemory.into(),
            "--maxmemory-policy".into(),
            policy.into(),
        ],
        ..ServerOptions::default()
    })?)
}

/// Jobs in every index and hash, for "nothing changed" comparisons.
fn key_count(server: &RedisServer) -> Result<i64> {
    let mut c = server.connection()?;
    Ok(redis::cmd("DBSIZE").query(&mut c)?)
}

#[tokio::test]
async fn a_full_redis_refuses_enqueues_clearly_and_still_settles_what_workers_hold() -> Result<()> {
    // Enough for the fill below to take a few thousand 4 KiB jobs.
    let server = server("noeviction", "24mb")?;
    let client = Client::connect(&server.url()).await?;
    let q = client.queue("mem")?;
    let m = client.server_memory().await?;
    ensure!(!m.evicts() && m.maxmemory == 24 << 20, "{m:?}");

    // Jobs a worker holds before Redis fills up.
    let lease = JobOptions::default().lease(Duration::from_secs(60));
    q.enqueue_batch(
        (0..6)
            .map(|i| NewJob::with_options(format!("held {i}"), lease.clone()))
            .collect(),
    )
    .await?;
    let held = q.reserve(6, Duration::from_secs(1)).await?;
    ensure!(held.len() == 6, "reserved {}", held.len());

    // Fill: 4 KiB payloads until Redis refuses.
    let payload = vec![b'x'; 4096];
    let mut accepted = 0usize;
    let refusal = loop {
        match q.enqueue(payload.clone(), JobOptions::default()).await {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        if accepted > 20_000 {
            bail!("24 MB of Redis took 20,000 jobs of 4 KiB without refusing");
        }
    };
    ensure!(
        matches!(refusal, Error::OutOfMemory { .. }),
        "expected OutOfMemory, got {refusal:?}"
    );
    let text = refusal.to_string();
    ensure!(
        text.contains("out of memory") && text.contains("maxmemory"),
        "{text}"
    );
    ensure!(refusal.is_transient(), "a full Redis may drain: retryable");
    println!("accepted {accepted} jobs of 4 KiB before: {text}");

    // A refused call writes nothing: single and batch, repeatedly.
    let before = (q.stats().await?, key_count(&server)?);
    for _ in 0..3 {
        let e = q
            .enqueue(payload.clone(), JobOptions::default())
            .await
            .err()
            .context("a full Redis accepted an enqueue")?;
        ensure!(matches!(e, Error::OutOfMemory { .. }), "{e:?}");
        let batch = (0..50)
            .map(|_| NewJob::new(payload.clone()))
            .collect::<Vec<_>>();
        let e = q
            .enqueue_batch(batch)
            .await
            .err()
            .context("a full Redis accepted a batch")?;
        ensure!(matches!(e, Error::OutOfMemory { .. }), "{e:?}");
    }
    let after = (q.stats().await?, key_count(&server)?);
    ensure!(
        before.1 == after.1 && before.0.ready == after.0.ready,
        "a refused enqueue changed Redis: {before:?} -> {after:?}"
    );

    // What the worker holds still heartbeats and settles, every outcome.
    for j in &held {
        q.heartbeat(j, Some("{\"percent\":50}")).await?;
    }
    let outcomes = [
        Settle::Complete(b"done".to_vec()),
        Settle::Complete(b"done".to_vec()),
        Settle::Retry("boom".into()),
        Settle::Dead("bad".into()),
        Settle::Release,
        Settle::Cancelled,
    ];
    for (j, how) in held.iter().zip(outcomes) {
        q.settle(j, how)
            .await
            .with_context(|| format!("settling {} on a full Redis", j.id))?;
    }
    let s = q.stats().await?;
    ensure!(s.active == 0, "still active after settling: {s:?}");

    // Consistent afterwards: every job where its state says.
    let report = q.check(false).await?;
    ensure!(report.findings.is_empty(), "{:?}", report.findings);

    // Room again (an operator raising maxmemory): enqueues work again.
    let mut c = server.connection()?;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("64mb")
        .query(&mut c)?;
    q.enqueue(payload.clone(), JobOptions::default()).await?;
    Ok(())
}

#[tokio::test]
async fn a_worker_refuses_an_evicting_redis_unless_told() -> Result<()> {
    let server = server("allkeys-lru", "64mb")?;
    let bin = example_binary("spool-worker", "sleep_worker")?;
    let mut w = WorkerProcess::spawn(&bin, &server.url(), &[])?;
    let status = w.wait_exit(Duration::from_secs(20))?;
    ensure!(!status.success(), "started on allkeys-lru: {}", w.log());
    let log = w.log();
    ensure!(
        log.contains("allkeys-lru")
            && log.contains("noeviction")
            && log.contains("SPOOL_ALLOW_EVICTION"),
        "the refusal must name the policy, the fix and the override:\n{log}"
    );

    let mut w = WorkerProcess::spawn(&bin, &server.url(), &[("SPOOL_ALLOW_EVICTION", "true")])?;
    w.wait_ready(Duration::from_secs(20))
        .with_context(|| format!("SPOOL_ALLOW_EVICTION=true must start: {}", w.log()))?;
    ensure!(
        w.log().contains("allkeys-lru"),
        "still logged as an error when allowed:\n{}",
        w.log()
    );
    w.kill();

    let bad = WorkerProcess::spawn(&bin, &server.url(), &[("SPOOL_ALLOW_EVICTION", "maybe")]);
    let mut bad = bad?;
    let status = bad.wait_exit(Duration::from_secs(10))?;
    ensure!(
        status.code() == Some(2) && bad.log().contains("SPOOL_ALLOW_EVICTION"),
        "{status:?} {}",
        bad.log()
    );
    Ok(())
}
