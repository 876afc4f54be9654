//! Flows: a parent that runs once its children have ended, proven against a
//! real redis-server the test starts on its own port.

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use spool_queue::{
    CancelOutcome, ChildFailure, Client, Error, Flow, JobId, JobOptions, JobState, NewJob, Queue,
    ReservedJob,
};
use spool_testkit::RedisServer;

async fn setup() -> Result<(RedisServer, Queue)> {
    let server = RedisServer::start()?;
    let client = Client::connect(&server.url()).await?;
    let queue = client.queue("flows")?;
    Ok((server, queue))
}

fn job(tag: &str) -> NewJob {
    NewJob::new(format!(r#"{{"tag":"{tag}"}}"#))
}

fn with_id(id: &str) -> NewJob {
    NewJob::with_options(format!(r#"{{"tag":"{id}"}}"#), JobOptions::default().id(id))
}

/// Reserves every ready job (a few calls), sorted by id.
async fn reserve_all(q: &Queue) -> Result<Vec<ReservedJob>> {
    let mut all = Vec::new();
    loop {
        let got = q.reserve(100, Duration::from_millis(50)).await?;
        if got.is_empty() {
            break;
        }
        all.extend(got);
    }
    all.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(all)
}

async fn state(q: &Queue, id: &str) -> Result<JobState> {
    Ok(q.info(id).await?.state)
}

#[tokio::test]
async fn the_parent_runs_after_its_children_and_reads_their_results() -> Result<()> {
    let (server, q) = setup().await?;
    let kept_for_0s = JobOptions::default().retention(Duration::ZERO);
    let flow = Flow::new(with_id("join"))
        .child(NewJob::with_options("{}", kept_for_0s.clone().id("a")))
        .child(NewJob::with_options("{}", kept_for_0s.clone().id("b")))
        .child(NewJob::with_options("{}", kept_for_0s.id("c")));
    let ids = q.enqueue_flow(&flow).await?;
    ensure!(ids == ["join", "a", "b", "c"], "{ids:?}");
    ensure!(state(&q, "join").await? == JobState::Waiting);
    let s = q.stats().await?;
    // The parent is not work yet: the autoscaler sees the three children.
    ensure!(
        s.ready == 3 && s.outstanding == 3 && s.waiting == 1,
        "{s:?}"
    );

    let kids = reserve_all(&q).await?;
    ensure!(
        kids.len() == 3,
        "only the children are reservable: {kids:?}"
    );
    for (i, k) in kids.iter().enumerate() {
        ensure!(
            state(&q, "join").await? == JobState::Waiting,
            "before child {i}"
        );
        // A waiting parent's progress is its children's.
        let progress = q.info("join").await?.progress;
        if i == 0 {
            ensure!(progress.is_none(), "{progress:?}");
        } else {
            ensure!(
                progress
                    == Some(serde_json::json!({
                        "phase": "children", "ended": i, "of": 3,
                        "percent": (1000.0 * i as f64 / 3.0).round() / 10.0
                    })),
                "after child {i}: {progress:?}"
            );
        }
        q.complete(k, format!(r#"{{"part":{i}}}"#).as_bytes())
            .await?;
    }
    // Ready in the same call that settled the last child.
    ensure!(state(&q, "join").await? == JobState::Ready);
    let s = q.stats().await?;
    ensure!(s.ready == 1 && s.waiting == 0, "{s:?}");

    let parent = q.reserve(1, Duration::from_secs(1)).await?;
    ensure!(parent.len() == 1 && parent[0].id == "join");
    // The children's hashes are gone (retention 0); their results stay.
    ensure!(matches!(q.info("a").await, Err(Error::NotFound { .. })));
    let children = q.children("join").await?;
    let got: Vec<(String, Option<serde_json::Value>)> = children
        .iter()
        .map(|c| (c.id.to_string(), c.result.clone()))
        .collect();
    ensure!(
        got == [
            ("a".to_owned(), Some(serde_json::json!({"part": 0}))),
            ("b".to_owned(), Some(serde_json::json!({"part": 1}))),
            ("c".to_owned(), Some(serde_json::json!({"part": 2}))),
        ],
        "{got:?}"
    );
    ensure!(
        children
            .iter()
            .all(|c| c.state.is_none() && c.error.is_none())
    );
    let info = q.info("join").await?;
    ensure!(info.child_count == Some(3) && info.on_child_failure == Some(ChildFailure::Fail));
    ensure!(q.info("join").await?.parent.is_none());

    // Completing a parent kept for 0 s deletes its flow keys with it.
    let parent_0s = Flow::new(NewJob::with_options(
        "{}",
        JobOptions::default().id("p0").retention(Duration::ZERO),
    ))
    .child(with_id("p0-child"));
    q.enqueue_flow(&parent_0s).await?;
    let child = q.reserve(1, Duration::from_secs(1)).await?;
    q.complete(&child[0], b"1").await?;
    let p0 = q.reserve(1, Duration::from_secs(1)).await?;
    ensure!(p0.len() == 1 && p0[0].id == "p0");
    q.complete(&p0[0], b"{}").await?;
    let mut conn = server.connection()?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("spool:{flows}:*p0")
        .query(&mut conn)?;
    ensure!(keys.is_empty(), "left behind: {keys:?}");
    // The other parent is retained (default retention), and so are its results.
    ensure!(q.children("join").await?.len() == 3);
    Ok(())
}

#[tokio::test]
async fn a_flow_is_enqueued_whole_once_in_one_round_trip() -> Result<()> {
    let (server, q) = setup().await?;
    let mut flow = Flow::new(with_id("root"));
    for i in 0..100 {
        flow = flow.child(job(&i.to_string()));
    }
    let mut conn = server.connection()?;
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut conn)?;
    let ids = q.enqueue_flow(&flow).await?;
    ensure!(ids.len() == 101 && ids[0] == "root");
    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut conn)?;
    let calls = |cmd: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // One script call (EVALSHA, or EVAL when the script was not cached yet).
    ensure!(
        calls("evalsha") + calls("eval") == 1 + calls("script|load"),
        "{stats}"
    );
    ensure!(q.stats().await?.ready == 100);

    // Again with the same root id: nothing new, the same ids back.
    let again = q.enqueue_flow(&flow).await?;
    ensure!(again == ids, "a retried flow must return the first ids");
    ensure!(q.stats().await?.ready == 100);

    // A child that exists already refuses the whole flow.
    let clash = Flow::new(with_id("root2"))
        .child(with_id("fresh"))
        .child(NewJob::with_options(
            "{}",
            JobOptions::default().id(ids[1].as_str()),
        ));
    match q.enqueue_flow(&clash).await {
        Err(e) => ensure!(e.to_string().contains("must be new jobs"), "{e}"),
        Ok(ids) => bail!("a clashing child must refuse the flow, got {ids:?}"),
    }
    ensure!(matches!(q.info("root2").await, Err(Error::NotFound { .. })));
    ensure!(matches!(q.info("fresh").await, Err(Error::NotFound { .. })));
    let same = Flow::new(with_id("root3"))
        .child(with_id("twin"))
        .child(with_id("twin"));
    match q.enqueue_flow(&same).await {
        Err(e) => ensure!(e.to_string().contains("appears twice"), "{e}"),
        Ok(ids) => bail!("a repeated id must refuse the flow, got {ids:?}"),
    }
    ensure!(q.stats().await?.ready == 100 && q.stats().await?.waiting == 1);
    Ok(())
}

#[tokio::test]
async fn a_dead_child_fails_its_parent_and_a_retry_revives_the_flow() -> Result<()> {
    let (_server, q) = setup().await?;
    let once = JobOptions::default().max_attempts(1);
    let flow = Flow::new(with_id("p"))
        .child(NewJob::with_options("{}", once.clone().id("bad")))
        .child(with_id("running"))
        .child(with_id("queued"));
    q.enqueue_flow(&flow).await?;
    let mut got = q.reserve(2, Duration::from_secs(1)).await?;
    got.sort_by(|a, b| a.id.cmp(&b.id));
    ensure!(
        got.len() == 2 && got[0].id == "bad" && got[1].id == "running",
        "{got:?}"
    );
    ensure!(q.fail(&got[0], "corrupt input").await? == JobState::Dead);

    let p = q.info("p").await?;
    ensure!(p.state == JobState::Dead, "{p:?}");
    let why = p.last_error.unwrap_or_default();
    ensure!(
        why.contains("child bad died") && why.contains("corrupt input"),
        "{why}"
    );
    ensure!(p.failed_by.as_deref() == Some("bad"));
    // The rest of the flow stops: the queued child at once, the running one
    // at its next heartbeat.
    ensure!(state(&q, "queued").await? == JobState::Cancelled);
    ensure!(q.heartbeat(&got[1], None).await?.cancel_requested);
    ensure!(q.settle(&got[1], spool_queue::Settle::Cancelled).await? == JobState::Cancelled);

    // Retrying the child from the dead letters revives the flow.
    ensure!(q.dead_retry(&[JobId::from("bad")], 10).await? == 1);
    ensure!(state(&q, "p").await? == JobState::Waiting);
    let again = reserve_all(&q).await?;
    let names: Vec<&str> = again.iter().map(|j| j.id.as_str()).collect();
    ensure!(names == ["bad", "queued", "running"], "{names:?}");
    for j in &again {
        ensure!(
            j.attempt == 1,
            "{} starts over: attempt {}",
            j.id,
            j.attempt
        );
        q.complete(j, b"ok").await?;
    }
    ensure!(state(&q, "p").await? == JobState::Ready);
    let kids = q.children("p").await?;
    ensure!(
        kids.iter().all(|c| c.completed() && c.error.is_none()),
        "{kids:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_revived_flow_reruns_what_it_cancelled_but_honours_a_cancel_by_hand() -> Result<()> {
    let (_server, q) = setup().await?;
    let once = JobOptions::default().max_attempts(1);
    let flow = Flow::new(with_id("p"))
        .child(NewJob::with_options("{}", once.id("bad")))
        .child(with_id("slow"))
        .child(with_id("busy"));
    q.enqueue_flow(&flow).await?;
    let got = reserve_all(&q).await?;
    let [bad, busy, slow] = &got[..] else {
        bail!("three children reserved: {got:?}")
    };
    q.fail(bad, "boom").await?;
    // The flow cancelled both running siblings; it is revived while they run.
    ensure!(q.heartbeat(slow, None).await?.cancel_requested);
    ensure!(q.dead_retry(&[JobId::from("bad")], 10).await? == 1);
    ensure!(state(&q, "p").await? == JobState::Waiting);
    // The revival withdrew the flow's cancel requests.
    ensure!(!q.heartbeat(busy, None).await?.cancel_requested);
    // `slow` saw its request before the revival and stops: it runs again.
    ensure!(q.settle(slow, spool_queue::Settle::Cancelled).await? == JobState::Ready);
    // `busy` is cancelled by hand now: that cancel stands, and fails the flow.
    ensure!(q.cancel("busy").await? == CancelOutcome::Requested);
    ensure!(q.heartbeat(busy, None).await?.cancel_requested);
    ensure!(q.settle(busy, spool_queue::Settle::Cancelled).await? == JobState::Cancelled);
    let p = q.info("p").await?;
    ensure!(
        p.state == JobState::Dead && p.failed_by.as_deref() == Some("busy"),
        "{p:?}"
    );
    ensure!(q.check(false).await?.findings.is_empty());
    Ok(())
}

#[tokio::test]
async fn continue_lets_the_parent_run_and_see_the_failures() -> Result<()> {
    let (_server, q) = setup().await?;
    let once = JobOptions::default().max_attempts(1);
    let flow = Flow::new(with_id("p"))
        .on_child_failure(ChildFailure::Continue)
        .child(NewJob::with_options("{}", once.clone().id("x")))
        .child(with_id("y"))
        .child(with_id("z"));
    q.enqueue_flow(&flow).await?;
    ensure!(q.cancel("z").await? == CancelOutcome::Cancelled);
    let got = reserve_all(&q).await?;
    ensure!(got.len() == 2);
    q.fail(&got[0], "boom").await?;
    ensure!(state(&q, "p").await? == JobState::Waiting);
    q.complete(&got[1], br#""fine""#).await?;
    ensure!(state(&q, "p").await? == JobState::Ready);
    let kids = q.children("p").await?;
    let summary: Vec<(String, Option<String>, bool)> = kids
        .iter()
        .map(|c| (c.id.to_string(), c.error.clone(), c.completed()))
        .collect();
    ensure!(
        summary
            == [
                (
                    "x".to_owned(),
                    Some("boom (attempt 1 of 1, no retries left)".to_owned()),
                    false
                ),
                ("y".to_owned(), None, true),
                ("z".to_owned(), Some("cancelled".to_owned()), false),
            ],
        "{summary:?}"
    );
    Ok(())
}

#[tokio::test]
async fn nested_flows_wait_level_by_level_and_cancel_as_a_tree() -> Result<()> {
    let (_server, q) = setup().await?;
    let tree = || {
        Flow::new(with_id("top"))
            .child(
                Flow::new(with_id("mid"))
                    .child(with_id("leaf1"))
                    .child(with_id("leaf2")),
            )
            .child(with_id("side"))
    };
    let ids = q.enqueue_flow(&tree()).await?;
    ensure!(ids == ["top", "mid", "leaf1", "leaf2", "side"], "{ids:?}");
    ensure!(q.stats().await?.waiting == 2);
    for j in reserve_all(&q).await? {
        q.complete(&j, b"1").await?;
    }
    ensure!(state(&q, "top").await? == JobState::Waiting);
    let mid = q.reserve(5, Duration::from_secs(1)).await?;
    ensure!(mid.len() == 1 && mid[0].id == "mid", "{mid:?}");
    ensure!(q.children("mid").await?.len() == 2);
    q.complete(&mid[0], b"2").await?;
    let top = q.reserve(5, Duration::from_secs(1)).await?;
    ensure!(top.len() == 1 && top[0].id == "top");
    ensure!(q.children("top").await?.iter().all(|c| c.completed()));

    // Cancelling a waiting parent cancels its whole live subtree.
    let (_server2, q2) = setup().await?;
    q2.enqueue_flow(&tree()).await?;
    ensure!(q2.cancel("top").await? == CancelOutcome::Cancelled);
    for id in ["top", "mid", "leaf1", "leaf2", "side"] {
        ensure!(state(&q2, id).await? == JobState::Cancelled, "{id}");
    }
    let s = q2.stats().await?;
    ensure!(
        s.ready == 0 && s.outstanding == 0 && s.waiting == 0,
        "{s:?}"
    );
    ensure!(q2.check(false).await?.findings.is_empty());
    Ok(())
}

#[tokio::test]
async fn an_expired_lease_on_a_last_attempt_reaches_the_parent() -> Result<()> {
    let (_server, q) = setup().await?;
    let short = JobOptions::default()
        .max_attempts(1)
        .lease(Duration::from_millis(200));
    let flow = Flow::new(with_id("p"))
        .on_child_failure(ChildFailure::Continue)
        .child(NewJob::with_options("{}", short.id("lost")));
    q.enqueue_flow(&flow).await?;
    let got = q.reserve(1, Duration::from_secs(1)).await?;
    ensure!(got.len() == 1);
    // The worker dies: nobody heartbeats or settles.
    drop(got);
    spool_testkit::wait_for("the parent to learn", Duration::from_secs(10), async || {
        q.sweep(100).await?;
        Ok(state(&q, "p").await? == JobState::Ready)
    })
    .await?;
    let kids = q.children("p").await?;
    ensure!(
        kids[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("lease expired")),
        "{kids:?}"
    );
    Ok(())
}

#[tokio::test]
async fn check_finds_and_repairs_a_parent_that_missed_its_child() -> Result<()> {
    let (server, q) = setup().await?;
    q.enqueue_flow(&Flow::new(with_id("p")).child(with_id("c")))
        .await?;
    ensure!(q.check(false).await?.findings.is_empty());
    // Damage: the child ends behind the scripts' back.
    let mut conn = server.connection()?;
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg("spool:{flows}:job:c")
        .arg("state")
        .arg("completed")
        .arg("result")
        .arg("7")
        .cmd("ZREM")
        .arg("spool:{flows}:ready")
        .arg("c")
        .cmd("SREM")
        .arg("spool:{flows}:outstanding")
        .arg("c")
        .query(&mut conn)?;
    let found = q.check(false).await?.findings;
    ensure!(
        found.iter().any(|f| f.contains("did not learn")),
        "{found:?}"
    );
    q.check(true).await?;
    ensure!(state(&q, "p").await? == JobState::Ready);
    ensure!(q.children("p").await?[0].result == Some(serde_json::json!(7)));
    ensure!(q.check(false).await?.findings.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_flow_runs_on_redis_cluster_in_its_queues_slot() -> Result<()> {
    let cluster = spool_testkit::RedisCluster::start(3)?;
    let client = Client::connect(&cluster.url()).await?;
    let q = client.queue("clustered")?;
    let ids = q
        .enqueue_flow(
            &Flow::new(with_id("p"))
                .child(with_id("a"))
                .child(with_id("b")),
        )
        .await?;
    ensure!(ids == ["p", "a", "b"]);
    for j in reserve_all(&q).await? {
        q.complete(&j, b"1").await?;
    }
    ensure!(state(&q, "p").await? == JobState::Ready);
    ensure!(q.children("p").await?.iter().all(|c| c.completed()));
    // A flow spanning queues cannot be atomic there: refused, nothing sent.
    let spanning = Flow::new(with_id("p2")).child(Flow::new(with_id("c2")).in_queue("elsewhere"));
    match q.enqueue_flow(&spanning).await {
        Err(e) => ensure!(e.to_string().contains("span queues"), "{e}"),
        Ok(ids) => bail!("a flow spanning queues was enqueued on a cluster: {ids:?}"),
    }
    ensure!(matches!(q.info("p2").await, Err(Error::NotFound { .. })));
    Ok(())
}

#[tokio::test]
async fn children_in_another_queue_report_to_their_parent() -> Result<()> {
    let (server, cpu) = setup().await?;
    let gpu = Client::connect(&server.url()).await?.queue("gpu")?;
    let once = JobOptions::default().max_attempts(1);
    let flow = Flow::new(with_id("join"))
        .child(Flow::new(with_id("part1")).in_queue("gpu"))
        .child(Flow::new(NewJob::with_options("{}", once.id("part2"))).in_queue("gpu"))
        .child(with_id("audio"));
    let ids = cpu.enqueue_flow(&flow).await?;
    ensure!(ids == ["join", "part1", "part2", "audio"], "{ids:?}");
    let (c, g) = (cpu.stats().await?, gpu.stats().await?);
    ensure!(
        c.ready == 1 && c.waiting == 1 && g.ready == 2,
        "{c:?} {g:?}"
    );
    ensure!(gpu.info("part1").await?.parent.as_deref() == Some("join"));

    // A GPU child dies: the CPU parent fails, naming it, and its CPU
    // sibling is cancelled.
    let parts = reserve_all(&gpu).await?;
    ensure!(parts.len() == 2, "{parts:?}");
    gpu.complete(&parts[0], b"\"p1\"").await?;
    ensure!(gpu.fail(&parts[1], "no GPU left").await? == JobState::Dead);
    let join = cpu.info("join").await?;
    ensure!(join.state == JobState::Dead, "{join:?}");
    ensure!(join.failed_by.as_deref() == Some("gpu part2"), "{join:?}");
    ensure!(state(&cpu, "audio").await? == JobState::Cancelled);

    // Retried on its own queue, the child revives the flow across queues.
    ensure!(gpu.dead_retry(&[JobId::from("part2")], 10).await? == 1);
    ensure!(state(&cpu, "join").await? == JobState::Waiting);
    for j in reserve_all(&gpu).await? {
        gpu.complete(&j, b"\"p2\"").await?;
    }
    ensure!(state(&cpu, "join").await? == JobState::Waiting);
    for j in reserve_all(&cpu).await? {
        cpu.complete(&j, b"\"a\"").await?;
    }
    ensure!(state(&cpu, "join").await? == JobState::Ready);
    let kids = cpu.children("join").await?;
    let seen: Vec<(String, Option<String>, bool)> = kids
        .iter()
        .map(|c| (c.id.to_string(), c.queue.clone(), c.completed()))
        .collect();
    ensure!(
        seen == [
            ("part1".to_owned(), Some("gpu".to_owned()), true),
            ("part2".to_owned(), Some("gpu".to_owned()), true),
            ("audio".to_owned(), None, true),
        ],
        "{seen:?}"
    );
    ensure!(kids[1].state == Some(JobState::Completed));

    // Cancelling a parent cancels its children in the other queue too.
    cpu.enqueue_flow(&Flow::new(with_id("j2")).child(Flow::new(with_id("x")).in_queue("gpu")))
        .await?;
    ensure!(cpu.cancel("j2").await? == CancelOutcome::Cancelled);
    ensure!(state(&gpu, "x").await? == JobState::Cancelled);
    ensure!(gpu.stats().await?.outstanding == 0);
    for q in [&cpu, &gpu] {
        let found = q.check(false).await?.findings;
        ensure!(found.is_empty(), "{}: {found:?}", q.name());
    }
    // A retried flow with the same root returns its ids across queues.
    ensure!(cpu.enqueue_flow(&flow).await? == ids);
    Ok(())
}

#[tokio::test]
async fn a_sibling_cancelled_during_a_reserve_is_not_leased() -> Result<()> {
    let (server, q) = setup().await?;
    q.enqueue_flow(
        &Flow::new(with_id("p"))
            .child(with_id("broken"))
            .child(with_id("fine")),
    )
    .await?;
    // The first child's payload is gone: the reserve that meets it records
    // it dead, which fails the flow and cancels its sibling, next in line.
    let mut conn = server.connection()?;
    let _: () = redis::cmd("HDEL")
        .arg("spool:{flows}:job:broken")
        .arg("payload")
        .query(&mut conn)?;
    let got = q.reserve(10, Duration::from_secs(1)).await?;
    ensure!(got.is_empty(), "leased {got:?}");
    ensure!(state(&q, "broken").await? == JobState::Dead);
    ensure!(state(&q, "fine").await? == JobState::Cancelled);
    ensure!(state(&q, "p").await? == JobState::Dead);
    let s = q.stats().await?;
    ensure!(s.active == 0 && s.outstanding == 0 && s.ready == 0, "{s:?}");
    ensure!(q.check(false).await?.findings.is_empty());
    Ok(())
}
