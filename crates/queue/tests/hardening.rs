//! Round three of the queue's hardening (issue 30), each case as an
//! operator met it: numbers in forms the protocol does not allow, a damaged
//! job in the middle of a page, a registry that hid live workers, a repair
//! that reversed the backlog, a job whose state field was deleted, and log
//! lines that came back as broken JSON.

use std::time::Duration;

use anyhow::{Result, ensure};
use redis::Value;
use spool_queue::{Client, JobOptions, JobState, Keys, NewJob, Queue, WorkerRecord};
use spool_testkit::RedisServer;

const LIB: &str = include_str!("../src/scripts/lib.lua");

async fn queue(server: &RedisServer, name: &str) -> Result<Queue> {
    Ok(Client::connect(&server.url()).await?.queue(name)?)
}

/// Runs a script with the queue's keys, as a producer in another language
/// would.
fn call(
    conn: &mut redis::Connection,
    body: &str,
    keys: &Keys,
    args: &[&str],
) -> redis::RedisResult<Value> {
    let script = redis::Script::new(&format!("{LIB}{body}"));
    let mut inv = script.prepare_invoke();
    for k in keys.script_keys() {
        inv.key(k);
    }
    inv.arg(&keys.prefix);
    for a in args {
        inv.arg(*a);
    }
    inv.invoke(conn)
}

/// `0x2`, `1e3`, ` 5` and `5.0` were accepted by `tonumber`, stored raw, and
/// then refused by every reader. Now the enqueue is refused, nothing written.
#[test]
fn numbers_in_other_forms_are_refused_and_nothing_is_written() -> Result<()> {
    let server = RedisServer::start()?;
    let mut c = server.connection()?;
    let keys = Keys::new("nums")?;
    let enqueue = concat!(
        include_str!("../src/scripts/lib_enqueue.lua"),
        include_str!("../src/scripts/enqueue.lua")
    );
    for bad in ["0x2", "1e3", " 5", "5.0", "+5"] {
        let args = [
            "nums", "1", "j1", "{}", bad, "0", "3", "0", "0", "30000", "0", "", "0", "",
        ];
        let r = call(&mut c, enqueue, &keys, &args);
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        ensure!(e.contains("decimal"), "priority {bad:?} accepted: {e}");
        let n: i64 = redis::cmd("DBSIZE").query(&mut c)?;
        ensure!(n == 0, "{n} keys written for priority {bad:?}");
    }
    let ok = [
        "nums", "1", "j1", "{}", "-5", "0", "3", "0", "0", "30000", "0", "", "0", "",
    ];
    call(&mut c, enqueue, &keys, &ok)?;
    Ok(())
}

/// One dead job with a damaged field no longer fails the whole dead-letter
/// page: the others are listed and the bad one reported.
#[tokio::test]
async fn one_damaged_job_does_not_hide_the_others() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server, "page").await?;
    let ids = q
        .enqueue_batch((0..3).map(|_| NewJob::new(b"{}".to_vec())).collect())
        .await?;
    for job in q.reserve(3, Duration::from_millis(10)).await? {
        q.fail_permanently(&job, "boom").await?;
    }
    let mut c = server.connection()?;
    redis::cmd("HSET")
        .arg(q.keys().job(&ids[1]))
        .arg("attempts")
        .arg("0x2")
        .exec(&mut c)?;
    let page = q.jobs_page(JobState::Dead, 0, 10).await?;
    ensure!(page.jobs.len() == 2, "{} readable", page.jobs.len());
    ensure!(
        page.unreadable.len() == 1 && page.unreadable[0].id == ids[1].as_str(),
        "{:?}",
        page.unreadable
    );
    ensure!(q.dead_list(0, 10).await?.len() == 2);
    // A key of the wrong type in the index: reported too.
    redis::cmd("DEL").arg(q.keys().job(&ids[2])).exec(&mut c)?;
    redis::cmd("SET")
        .arg(q.keys().job(&ids[2]))
        .arg("x")
        .exec(&mut c)?;
    let page = q.jobs_page(JobState::Dead, 0, 10).await?;
    ensure!(
        page.jobs.len() == 1 && page.unreadable.len() == 2,
        "{page:?}"
    );
    Ok(())
}

/// A worker with a 1 s lease refreshing beside one with a 60 s lease used to
/// trim the other out of the registry by its own TTL.
#[tokio::test]
async fn a_short_lease_worker_never_hides_a_long_lease_one() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server, "reg").await?;
    let long = WorkerRecord::new("reg", "host-a", "1", 4);
    let short = WorkerRecord::new("reg", "host-b", "1", 4);
    q.register_worker(&long, Duration::from_secs(120)).await?;
    for _ in 0..6 {
        q.register_worker(&short, Duration::from_secs(1)).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seen: Vec<String> = q.workers().await?.into_iter().map(|w| w.id).collect();
    ensure!(
        seen.contains(&long.id),
        "the long-lease worker is hidden: {seen:?}"
    );
    ensure!(seen.contains(&short.id), "{seen:?}");
    // The short one's record expires by its own TTL.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen: Vec<String> = q.workers().await?.into_iter().map(|w| w.id).collect();
    ensure!(seen == vec![long.id.clone()], "{seen:?}");
    Ok(())
}

/// Ready jobs put back by `check --repair` keep their first-in, first-out
/// order (it used to reverse them).
#[tokio::test]
async fn repair_keeps_the_backlog_in_order() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server, "fifo").await?;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            q.enqueue(format!("{{\"n\":{i}}}"), JobOptions::default())
                .await?,
        );
        // Distinct enqueue times.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let mut c = server.connection()?;
    redis::cmd("DEL").arg(&q.keys().ready).exec(&mut c)?;
    let report = q.check(true).await?;
    ensure!(report.findings.len() == 5, "{:?}", report.findings);
    let order: Vec<String> = redis::cmd("ZRANGE")
        .arg(&q.keys().ready)
        .arg(0)
        .arg(-1)
        .query(&mut c)?;
    let want: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    ensure!(order == want, "after repair {order:?}, enqueued {want:?}");
    Ok(())
}

/// A running job whose hash lost its `state` field sat in no index, and
/// `check` did not see it.
#[tokio::test]
async fn a_job_without_its_state_field_is_found() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server, "nostate").await?;
    let id = q.enqueue(b"{}".to_vec(), JobOptions::default()).await?;
    let _job = q.reserve(1, Duration::from_millis(10)).await?;
    let mut c = server.connection()?;
    redis::cmd("HDEL")
        .arg(q.keys().job(&id))
        .arg("state")
        .exec(&mut c)?;
    // The sweep finds the lease gone stale only later; check sees it now.
    let report = q.check(false).await?;
    ensure!(
        report.findings.iter().any(|f| f.contains("no state field")),
        "{:?}",
        report.findings
    );
    q.check(true).await?;
    let info = q.info(&id).await?;
    ensure!(info.state == JobState::Dead, "{:?}", info.state);
    ensure!(q.check(false).await?.findings.is_empty());
    Ok(())
}

/// A line over the script's limit (another producer's) is replaced by a
/// valid warning line, not cut into JSON no reader can parse.
#[tokio::test]
async fn an_oversized_log_line_is_replaced_not_cut() -> Result<()> {
    let server = RedisServer::start()?;
    let q = queue(&server, "logs").await?;
    let id = q.enqueue(b"{}".to_vec(), JobOptions::default()).await?;
    let mut c = server.connection()?;
    let long = format!(
        r#"{{"at_ms":1,"level":"info","message":"{}"}}"#,
        "\\u0001".repeat(1000)
    );
    call(
        &mut c,
        include_str!("../src/scripts/log.lua"),
        q.keys(),
        &[id.as_str(), &long],
    )?;
    let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(format!("{}log:{}", q.keys().prefix, id))
        .arg(0)
        .arg(-1)
        .query(&mut c)?;
    ensure!(raw.len() == 1 && raw[0].len() <= 2048, "{raw:?}");
    let v: serde_json::Value = serde_json::from_slice(&raw[0])?;
    ensure!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("dropped"),
        "{v}"
    );
    ensure!(q.job_log(&id).await?.len() == 1);
    Ok(())
}
