//! TLS and least-privilege ACLs against real redis-servers.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use spool_queue::{Client, ClientOptions, Error, JobOptions};
use spool_testkit::{RedisServer, make_tls};

#[tokio::test]
async fn a_job_round_trips_over_tls_and_a_wrong_ca_is_refused_naming_tls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let files = make_tls(dir.path())?;
    let server = RedisServer::start_tls(&files)?;
    ensure!(server.url().starts_with("rediss://"));
    let ca = std::fs::read(&files.ca)?;
    let opts = ClientOptions::default().with_tls_ca_pem(Some(ca));
    let client = Client::connect_with(&server.url(), opts).await?;
    let q = client.queue("tls")?;
    // An idle wait blocks on a pooled connection, which must trust the CA too.
    let idle = q.reserve(1, Duration::from_millis(300)).await?;
    ensure!(idle.is_empty());
    let id = q.enqueue(b"{}".to_vec(), JobOptions::default()).await?;
    let job = q.reserve(1, Duration::from_secs(2)).await?.remove(0);
    ensure!(job.id == id);
    q.complete(&job, b"\"over tls\"").await?;
    ensure!(q.info(&id).await?.result == Some(serde_json::json!("over tls")));

    // Another CA: the handshake fails and the message says so.
    let other = tempfile::tempdir()?;
    let stranger = make_tls(other.path())?;
    let opts = ClientOptions::default().with_tls_ca_pem(Some(std::fs::read(&stranger.ca)?));
    match Client::connect_with(&server.url(), opts).await {
        Err(e @ Error::Tls { .. }) => ensure!(e.to_string().contains("TLS"), "{e}"),
        Err(e) => bail!("expected a TLS error, got: {e}"),
        Ok(_) => bail!("a server signed by an unknown CA was trusted"),
    }
    Ok(())
}

/// The ACL lines documented in docs/protocol.md, for queue `encode`.
fn documented_acls() -> Result<Vec<String>> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/protocol.md"
    ))?;
    let lines: Vec<String> = doc
        .lines()
        .filter(|l| l.starts_with("ACL SETUSER "))
        .map(str::to_owned)
        .collect();
    ensure!(
        lines.len() == 3,
        "docs/protocol.md must give three ACL lines, found {}",
        lines.len()
    );
    Ok(lines)
}

fn apply(server: &RedisServer, line: &str, password: &str) -> Result<()> {
    let mut c = server.connection()?;
    let mut cmd = redis::cmd("ACL");
    for (i, word) in line.split_whitespace().skip(1).enumerate() {
        let word = if word.starts_with('>') && word.ends_with("_PASSWORD") {
            format!(">{password}")
        } else {
            word.to_owned()
        };
        let _ = i;
        cmd.arg(word);
    }
    let _: () = cmd.query(&mut c)?;
    Ok(())
}

#[tokio::test]
async fn each_documented_acl_user_can_do_its_job_and_nothing_more() -> Result<()> {
    let server = RedisServer::start()?;
    for line in documented_acls()? {
        apply(&server, &line, "pw")?;
    }
    let port = server.port();
    let as_user = |user: &str| format!("redis://{user}:pw@127.0.0.1:{port}");

    // The producer enqueues, but cannot reserve.
    let producer = Client::connect(&as_user("spool-producer"))
        .await?
        .queue("encode")?;
    let id = producer
        .enqueue(b"{}".to_vec(), JobOptions::default())
        .await?;
    ensure!(producer.info(&id).await?.state == spool_queue::JobState::Ready);
    match producer.try_reserve(1).await {
        Err(e @ Error::Redis { .. }) => ensure!(
            e.to_string().contains("NOPERM") || e.to_string().contains("can't run this command"),
            "{e}"
        ),
        other => bail!("a producer must not reserve: {other:?}"),
    }
    // It cancels a job of its own that waits.
    let waiting = producer
        .enqueue(b"{}".to_vec(), JobOptions::default())
        .await?;
    ensure!(producer.cancel(&waiting).await? == spool_queue::CancelOutcome::Cancelled);
    ensure!(
        producer.sweep(10).await.is_err(),
        "a producer must not sweep (recover leases)"
    );
    // Nor touch another queue's keys.
    let elsewhere = Client::connect(&as_user("spool-producer"))
        .await?
        .queue("billing")?;
    ensure!(
        elsewhere
            .enqueue(b"{}".to_vec(), JobOptions::default())
            .await
            .is_err(),
        "producer wrote another queue"
    );

    // The worker reserves and completes, but cannot administer Redis.
    let worker_client = Client::connect(&as_user("spool-worker")).await?;
    let worker = worker_client.queue("encode")?;
    let job = worker.reserve(1, Duration::from_secs(2)).await?.remove(0);
    ensure!(job.id == id);
    let line = spool_queue::LogLine::now(spool_queue::LogLevel::Warning, "a damaged frame");
    ensure!(worker.append_log(&job.id, &[line]).await? == 1);
    ensure!(worker.job_log(&job.id).await?.len() == 1);
    worker.complete(&job, b"").await?;
    // The worker's user pauses; a producer still enqueues into the paused
    // queue, and the job waits until the resume.
    ensure!(worker.pause().await?.paused);
    let held = producer
        .enqueue(b"{}".to_vec(), JobOptions::default())
        .await?;
    ensure!(producer.info(&held).await?.state == spool_queue::JobState::Ready);
    ensure!(worker.try_reserve(1).await?.jobs.is_empty());
    ensure!(producer.pause().await.is_err(), "a producer must not pause");
    ensure!(worker.resume().await?.ready == 1);
    let job = worker.reserve(1, Duration::from_secs(2)).await?.remove(0);
    ensure!(job.id == held);
    worker.complete(&job, b"").await?;
    // Idle waits borrow a pooled connection again and again; reusing one must
    // need nothing outside the documented ACL (deadpool-redis checks a
    // connection with UNWATCH and PING before handing it out).
    let mut admin = server.connection()?;
    let _: () = redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .query(&mut admin)?;
    for _ in 0..3 {
        ensure!(
            worker
                .reserve(1, Duration::from_millis(100))
                .await?
                .is_empty()
        );
    }
    let denied: Vec<redis::Value> = redis::cmd("ACL").arg("LOG").query(&mut admin)?;
    ensure!(
        denied.is_empty(),
        "idle waits ran commands the ACL denies: {denied:?}"
    );
    let refused: Result<String, _> = worker_client
        .raw_query(redis::cmd("CONFIG").arg("GET").arg("dir"))
        .await;
    ensure!(refused.is_err(), "a worker must not run CONFIG");
    let refused: Result<(), _> = worker_client.raw_query(&redis::cmd("FLUSHALL")).await;
    ensure!(refused.is_err(), "a worker must not run FLUSHALL");

    // KEDA reads the two keys' sizes the way its redis scaler does, and nothing else.
    let keda = redis::Client::open(as_user("keda"))?;
    let mut k = keda.get_multiplexed_async_connection().await?;
    // kedacore/keda pkg/scalers/redis_scaler.go measures a key by its type in EVAL.
    let script = r#"local t = redis.call('TYPE', KEYS[1])['ok']
        if t == 'list' then return redis.call('LLEN', KEYS[1])
        elseif t == 'set' then return redis.call('SCARD', KEYS[1])
        elseif t == 'zset' then return redis.call('ZCARD', KEYS[1])
        elseif t == 'hash' then return redis.call('HLEN', KEYS[1])
        else return 0 end"#;
    for key in ["spool:{encode}:outstanding", "spool:{encode}:ready"] {
        let n: i64 = redis::cmd("EVAL")
            .arg(script)
            .arg(1)
            .arg(key)
            .query_async(&mut k)
            .await
            .with_context(|| format!("KEDA reading {key}"))?;
        ensure!(n == 0, "{key}: {n}");
    }
    let job_hash: Result<Vec<String>, _> = redis::cmd("HGETALL")
        .arg(format!("spool:{{encode}}:job:{id}"))
        .query_async(&mut k)
        .await;
    ensure!(job_hash.is_err(), "KEDA must not read job data");
    let write: Result<i64, _> = redis::cmd("SADD")
        .arg("spool:{encode}:outstanding")
        .arg("x")
        .query_async(&mut k)
        .await;
    ensure!(write.is_err(), "KEDA must not write");
    Ok(())
}
