//! `spoolctl` as scripts use it: real processes against a real redis-server.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, ensure};
use spool_testkit::RedisServer;

fn spoolctl(server: &RedisServer, args: &[&str], stdin: Option<&str>) -> Result<Output> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spoolctl"))
        .args(args)
        .env("SPOOL_REDIS_URL", server.url())
        .env_remove("SPOOL_QUEUE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut pipe = child.stdin.take().context("stdin")?;
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes())?;
    }
    drop(pipe);
    Ok(child.wait_with_output()?)
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn enqueue_from_stdin_prints_ids_in_order_and_stats_count_them() -> Result<()> {
    let server = RedisServer::start()?;
    let lines: String = (0..250).map(|i| format!("{{\"n\": {i}}}\n")).collect();
    let o = spoolctl(
        &server,
        &["-q", "renders", "enqueue", "-", "--priority", "-5"],
        Some(&lines),
    )?;
    ensure!(o.status.success(), "{}", err(&o));
    let ids: Vec<String> = out(&o).lines().map(str::to_owned).collect();
    ensure!(ids.len() == 250);

    // Input order: the 100th id holds the 100th payload.
    let o = spoolctl(
        &server,
        &["-q", "renders", "inspect", &ids[99], "--json"],
        None,
    )?;
    ensure!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o))?;
    for field in [
        "id",
        "queue",
        "state",
        "attempts",
        "max_attempts",
        "progress",
        "result",
        "last_error",
    ] {
        ensure!(v.get(field).is_some(), "inspect --json lacks {field}: {v}");
    }
    ensure!(
        v["payload"] == "{\"n\": 99}" && v["state"] == "ready" && v["priority"] == -5,
        "{v}"
    );

    let o = spoolctl(&server, &["stats", "--json"], None)?;
    ensure!(o.status.success(), "{}", err(&o));
    let rows: Vec<serde_json::Value> = out(&o)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let renders = rows
        .iter()
        .find(|r| r["queue"] == "renders")
        .context("queue missing from stats")?;
    ensure!(
        renders["ready"] == 250 && renders["outstanding"] == 250,
        "{renders}"
    );
    for field in ["queue", "ready", "scheduled", "active", "dead", "completed"] {
        ensure!(renders.get(field).is_some(), "stats --json lacks {field}");
    }
    let table = out(&spoolctl(&server, &["stats"], None)?);
    ensure!(
        table.contains("renders") && table.contains("250"),
        "{table}"
    );
    Ok(())
}

#[test]
fn bad_json_enqueues_nothing_and_exits_2_naming_the_line() -> Result<()> {
    let server = RedisServer::start()?;
    let o = spoolctl(&server, &["enqueue", "-"], Some("{\"ok\":1}\nnot json\n"))?;
    ensure!(o.status.code() == Some(2), "{:?}", o.status);
    ensure!(
        err(&o).contains("line 2") && err(&o).lines().count() == 1,
        "{}",
        err(&o)
    );
    let o = spoolctl(&server, &["stats", "--json", "-q", "encode"], None)?;
    ensure!(out(&o).contains("\"ready\":0"), "{}", out(&o));
    let o = spoolctl(
        &server,
        &["enqueue", "--payload", "{", "--max-attempts", "3"],
        None,
    )?;
    ensure!(o.status.code() == Some(2));
    let o = spoolctl(
        &server,
        &["enqueue", "--payload", "{}", "--priority", "5000"],
        None,
    )?;
    ensure!(
        o.status.code() == Some(2) && err(&o).contains("priority"),
        "{}",
        err(&o)
    );
    Ok(())
}

#[test]
fn unknown_ids_exit_2_and_unreachable_redis_exits_1() -> Result<()> {
    let server = RedisServer::start()?;
    let o = spoolctl(&server, &["inspect", "no-such-job"], None)?;
    ensure!(
        o.status.code() == Some(2) && err(&o).contains("not found"),
        "{}",
        err(&o)
    );
    // A stopped Redis: one clear line, exit 1, within 3 seconds.
    let mut stopped = RedisServer::start()?;
    let url = stopped.url().replace("redis://", "redis://:pw123@");
    stopped.kill();
    let started = std::time::Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_spoolctl"))
        .args(["--redis-url", &url, "stats"])
        .output()?;
    let took = started.elapsed();
    ensure!(o.status.code() == Some(1), "{:?}", o.status);
    ensure!(took < std::time::Duration::from_secs(3), "took {took:?}");
    let e = err(&o);
    ensure!(
        e.lines().count() == 1 && e.contains("cannot reach Redis") && !e.contains("pw123"),
        "{e}"
    );
    Ok(())
}

#[test]
fn cancel_dead_and_watch_work_on_real_jobs() -> Result<()> {
    let server = RedisServer::start()?;
    let id = out(&spoolctl(
        &server,
        &["enqueue", "--payload", "{}", "--delay", "1m"],
        None,
    )?)
    .trim()
    .to_owned();
    let o = spoolctl(&server, &["cancel", &id], None)?;
    ensure!(
        o.status.success() && out(&o).contains("cancelled"),
        "{}",
        out(&o)
    );
    let o = spoolctl(&server, &["watch", &id], None)?;
    ensure!(
        o.status.code() == Some(1),
        "watching a cancelled job must fail: {:?}",
        o.status
    );

    // Kill a job by hand through the library, then list, retry and purge it.
    let rt = tokio::runtime::Runtime::new()?;
    let dead_id = rt.block_on(async {
        let q = spool_queue::Client::connect(&server.url())
            .await?
            .queue("encode")?;
        let id = q.enqueue(b"{}".to_vec(), Default::default()).await?;
        let job = q
            .reserve(1, std::time::Duration::from_secs(1))
            .await?
            .remove(0);
        q.fail_permanently(&job, "unsupported pixel format").await?;
        anyhow::Ok(id)
    })?;
    let o = spoolctl(&server, &["dead", "list"], None)?;
    ensure!(
        out(&o).contains(dead_id.as_str()) && out(&o).contains("unsupported pixel format"),
        "{}",
        out(&o)
    );
    let o = spoolctl(&server, &["dead", "retry", &dead_id], None)?;
    ensure!(out(&o).contains("retried 1"), "{}", out(&o));
    let done = rt.block_on(async {
        let q = spool_queue::Client::connect(&server.url())
            .await?
            .queue("encode")?;
        let job = q
            .reserve(1, std::time::Duration::from_secs(1))
            .await?
            .remove(0);
        q.complete(&job, b"{\"out\":\"a.mp4\"}").await?;
        anyhow::Ok(job.id)
    })?;
    ensure!(done == dead_id);
    let o = spoolctl(&server, &["watch", &dead_id], None)?;
    ensure!(
        o.status.success() && out(&o).contains("a.mp4"),
        "{} {}",
        out(&o),
        err(&o)
    );
    let o = spoolctl(&server, &["keys"], None)?;
    ensure!(
        out(&o).contains("spool:{encode}:outstanding"),
        "{}",
        out(&o)
    );
    Ok(())
}

#[test]
fn simulate_replays_a_profile_against_the_shipped_scaledobject() -> Result<()> {
    let server = RedisServer::start()?;
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/k8s/components/keda/scaledobject.yaml"
    );
    let dir = std::env::temp_dir().join(format!("spoolctl-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let svg = dir.join("plot.svg");
    let o = spoolctl(
        &server,
        &[
            "simulate",
            "--manifest",
            manifest,
            "--profile",
            "burst",
            "--plot",
            svg.to_str().context("path")?,
        ],
        None,
    )?;
    ensure!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    ensure!(text.contains("jobs 400 completed 400"), "{text}");
    ensure!(
        std::fs::read_to_string(&svg)?.contains("<svg"),
        "no SVG written"
    );
    // One hour-long encode: chunked into minutes on the fleet the
    // ScaledObject grows, its outputs are out well within the hour it takes
    // whole.
    let hour = dir.join("hour.csv");
    std::fs::write(&hour, "arrival_s,duration_s\n0,3600\n")?;
    let hour = hour.to_str().context("path")?;
    let p50 = |args: &[&str]| -> Result<f64> {
        let mut all = vec!["simulate", "--manifest", manifest, "--load", hour];
        all.extend_from_slice(args);
        let o = spoolctl(&server, &all, None)?;
        ensure!(o.status.success(), "{}", err(&o));
        let text = out(&o);
        let v = text
            .split("latency (arrival to outputs) p50 ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .context(format!("no latency in {text}"))?;
        Ok(v)
    };
    let (whole, chunked) = (p50(&[])?, p50(&["--chunked", "60"])?);
    ensure!(
        whole >= 3600.0 && chunked < whole / 4.0,
        "whole {whole} s, chunked {chunked} s"
    );
    let o = spoolctl(
        &server,
        &["simulate", "--manifest", manifest, "--chunked", "0.5"],
        None,
    )?;
    ensure!(
        o.status.code() == Some(2) && err(&o).contains("--chunked"),
        "{}",
        err(&o)
    );
    let o = spoolctl(
        &server,
        &["simulate", "--manifest", manifest, "--profile", "weekly"],
        None,
    )?;
    ensure!(
        o.status.code() == Some(2) && err(&o).contains("unknown --profile"),
        "{}",
        err(&o)
    );
    let o = spoolctl(
        &server,
        &["simulate", "--manifest", "/nonexistent.yaml"],
        None,
    )?;
    ensure!(o.status.code() == Some(2), "{}", err(&o));
    // The ScaledJob component: Jobs of one job each; none started for nothing.
    let jobs = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/k8s/components/keda-scaledjob/scaledjob.yaml"
    );
    let o = spoolctl(
        &server,
        &["simulate", "--manifest", jobs, "--profile", "burst"],
        None,
    )?;
    ensure!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    ensure!(
        text.contains("ScaledJob: strategy Default") && text.contains("found no work 0"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[test]
fn an_oversize_line_after_a_thousand_good_ones_enqueues_nothing() -> Result<()> {
    let server = RedisServer::start()?;
    let mut input = String::new();
    for i in 0..1001 {
        input.push_str(&format!("{{\"n\":{i}}}\n"));
    }
    // Over the 1 MiB payload limit.
    input.push_str(&format!("{{\"big\":\"{}\"}}\n", "x".repeat(1_100_000)));
    let o = spoolctl(&server, &["enqueue", "-"], Some(&input))?;
    ensure!(o.status.code() == Some(2), "{:?} {}", o.status, err(&o));
    ensure!(
        err(&o).contains("line 1002") && err(&o).contains("nothing was enqueued"),
        "{}",
        err(&o)
    );
    ensure!(out(&o).is_empty(), "ids were printed: {}", out(&o).len());
    let o = spoolctl(&server, &["stats", "--json", "-q", "encode"], None)?;
    ensure!(out(&o).contains("\"outstanding\":0"), "{}", out(&o));
    Ok(())
}

#[test]
fn huge_delays_and_bad_queue_names_are_refused_not_wrapped() -> Result<()> {
    let server = RedisServer::start()?;
    for delay in [
        "18446744073709551615ms",
        "100000000000000000000",
        "400d",
        "367d",
    ] {
        let o = spoolctl(
            &server,
            &["enqueue", "--payload", "{}", "--delay", delay],
            None,
        )?;
        ensure!(
            o.status.code() == Some(2) && err(&o).contains("delay"),
            "--delay {delay}: {:?} {}",
            o.status,
            err(&o)
        );
    }
    // A queue registered under a name spool cannot use: the others still show.
    let o = spoolctl(&server, &["enqueue", "--payload", "{}"], None)?;
    ensure!(o.status.success());
    let mut conn = server.connection()?;
    redis::cmd("SADD")
        .arg("spool:queues")
        .arg("bad name")
        .exec(&mut conn)?;
    let o = spoolctl(&server, &["stats", "--json"], None)?;
    ensure!(o.status.code() == Some(1), "{:?}", o.status);
    ensure!(
        out(&o).contains("\"queue\":\"encode\"") && out(&o).contains("\"error\""),
        "{}",
        out(&o)
    );
    ensure!(err(&o).contains("bad name"), "{}", err(&o));
    Ok(())
}

#[test]
fn check_finds_and_repairs_jobs_stranded_by_a_deleted_index() -> Result<()> {
    let server = RedisServer::start()?;
    let o = spoolctl(&server, &["enqueue", "-"], Some("{}\n{}\n{}\n"))?;
    ensure!(o.status.success(), "{}", err(&o));
    let o = spoolctl(
        &server,
        &["enqueue", "--payload", "{}", "--delay", "1h"],
        None,
    )?;
    ensure!(o.status.success());
    let o = spoolctl(&server, &["check"], None)?;
    ensure!(o.status.success(), "a healthy queue: {}", out(&o));
    let mut conn = server.connection()?;
    redis::cmd("DEL")
        .arg("spool:{encode}:ready")
        .arg("spool:{encode}:scheduled")
        .exec(&mut conn)?;
    let o = spoolctl(&server, &["check"], None)?;
    ensure!(o.status.code() == Some(1), "{}", out(&o));
    ensure!(out(&o).contains("4 found"), "{}", out(&o));
    let o = spoolctl(&server, &["check", "--repair", "--dry-run"], None)?;
    ensure!(o.status.code() == Some(1) && out(&o).contains("4 found"));
    let o = spoolctl(&server, &["check", "--repair"], None)?;
    ensure!(
        o.status.success() && out(&o).contains("4 repaired"),
        "{}",
        out(&o)
    );
    let o = spoolctl(&server, &["stats", "--json", "-q", "encode"], None)?;
    let s: serde_json::Value = serde_json::from_str(out(&o).trim())?;
    ensure!(
        s["ready"] == 3 && s["outstanding"] == 3 && s["scheduled"] == 1,
        "{s}"
    );
    let o = spoolctl(&server, &["check"], None)?;
    ensure!(
        o.status.success() && out(&o).contains("0 found"),
        "{}",
        out(&o)
    );
    Ok(())
}

#[test]
fn watch_survives_a_redis_restart_and_knows_an_unretained_job_finished() -> Result<()> {
    use spool_queue::{Client, JobOptions};
    use std::time::Duration;
    let mut server = RedisServer::start()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let queue =
        rt.block_on(async { anyhow::Ok(Client::connect(&server.url()).await?.queue("encode")?) })?;
    let id = rt.block_on(
        queue.enqueue(
            b"{}".to_vec(),
            JobOptions::default()
                .retention(Duration::ZERO)
                .lease(Duration::from_secs(60)),
        ),
    )?;
    let jobs = rt.block_on(queue.try_reserve(1))?.jobs;
    let job = jobs.first().context("nothing reserved")?.clone();
    let watch = Command::new(env!("CARGO_BIN_EXE_spoolctl"))
        .args(["watch", &id])
        .env("SPOOL_REDIS_URL", server.url())
        .env_remove("SPOOL_QUEUE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(800));
    // Redis goes away for a moment and comes back with its AOF.
    server.kill();
    std::thread::sleep(Duration::from_secs(2));
    server.restart()?;
    let queue =
        rt.block_on(async { anyhow::Ok(Client::connect(&server.url()).await?.queue("encode")?) })?;
    rt.block_on(queue.complete(&job, b"{}"))?;
    let o = watch.wait_with_output()?;
    ensure!(
        o.status.success(),
        "{:?}\n{}\n{}",
        o.status,
        out(&o),
        err(&o)
    );
    ensure!(out(&o).contains("not retained"), "{}", out(&o));
    Ok(())
}

#[test]
fn workers_lists_the_registry_and_forgets_expired_records() -> Result<()> {
    use spool_queue::{Client, WorkerRecord};
    use std::time::Duration;
    let server = RedisServer::start()?;
    let rt = tokio::runtime::Runtime::new()?;
    let queue =
        rt.block_on(async { anyhow::Ok(Client::connect(&server.url()).await?.queue("encode")?) })?;
    // `spool:queues` lists the queue, as after its first enqueue.
    let o = spoolctl(&server, &["enqueue", "--payload", "{}"], None)?;
    ensure!(o.status.success(), "{}", err(&o));
    let mut rec = WorkerRecord::new("encode", "gpu-node-1", "0.1.0", 8);
    rec.active = vec!["job-a".into()];
    rt.block_on(queue.register_worker(&rec, Duration::from_secs(1)))?;
    let o = spoolctl(&server, &["workers", "--json"], None)?;
    ensure!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(out(&o).trim())?;
    ensure!(
        v["id"] == rec.id.as_str() && v["active"][0] == "job-a" && v["concurrency"] == 8,
        "{v}"
    );
    let table = out(&spoolctl(&server, &["workers"], None)?);
    ensure!(
        table.contains(&rec.id) && table.contains("job-a"),
        "{table}"
    );
    std::thread::sleep(Duration::from_millis(1200));
    let o = spoolctl(&server, &["workers", "--json"], None)?;
    ensure!(
        out(&o).trim().is_empty(),
        "an expired record is still listed: {}",
        out(&o)
    );
    Ok(())
}

/// Escape sequences in a job (payload, error, log: FFmpeg's messages about
/// untrusted media reach logs) and in the worker registry are printed
/// escaped, never raw, so a job cannot retitle or clear the operator's
/// terminal; `--json` stays exact.
#[test]
fn terminal_escapes_from_a_job_are_shown_not_obeyed() -> Result<()> {
    let server = RedisServer::start()?;
    let evil = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}";
    let payload = serde_json::json!({ "x": evil }).to_string();
    let o = spoolctl(&server, &["enqueue", "-"], Some(&format!("{payload}\n")))?;
    ensure!(o.status.success(), "{}", err(&o));
    let id = out(&o).trim().to_owned();
    let mut c = server.connection()?;
    redis::cmd("HSET")
        .arg(format!("spool:{{encode}}:job:{id}"))
        .arg("last_error")
        .arg(format!("bad {evil}\nforged line"))
        .exec(&mut c)?;
    redis::cmd("SET")
        .arg("spool:{encode}:worker:w1")
        .arg(
            serde_json::json!({
                "id": format!("w1{evil}"), "host": "h", "version": "1", "queue": "encode",
                "concurrency": 1, "active": [], "draining": false,
                "started_at_ms": 0, "last_seen_ms": 0
            })
            .to_string(),
        )
        .exec(&mut c)?;
    redis::cmd("ZADD")
        .arg("spool:{encode}:workers")
        .arg(u64::MAX / 4)
        .arg("w1")
        .exec(&mut c)?;
    for args in [vec!["inspect", id.as_str()], vec!["workers"]] {
        let o = spoolctl(&server, &args, None)?;
        ensure!(o.status.success(), "{args:?}: {}", err(&o));
        let text = out(&o);
        ensure!(
            !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\u{202e}'),
            "{args:?} printed raw control characters: {text:?}"
        );
        ensure!(text.contains("\\x1b]0;pwned"), "{args:?}: {text}");
    }
    let o = spoolctl(&server, &["inspect", &id], None)?;
    ensure!(!out(&o).contains("\nforged line"), "{}", out(&o));
    // JSON output is exact: the same bytes come back after parsing.
    let o = spoolctl(&server, &["inspect", &id, "--json"], None)?;
    let v: serde_json::Value = serde_json::from_str(&out(&o))?;
    ensure!(
        v["last_error"].as_str().unwrap_or_default().contains(evil),
        "{v}"
    );
    Ok(())
}

/// Redis frozen while `spoolctl enqueue -` streams: the call in flight may
/// run after the client gave up, so its jobs are reported as uncertain, not
/// as "not enqueued", and the message names the `--id-prefix` that makes a
/// re-send enqueue exactly what is missing. After the re-send the queue
/// holds every line once.
#[test]
fn a_send_cut_short_by_a_frozen_redis_can_be_resent_without_duplicates() -> Result<()> {
    let server = RedisServer::start()?;
    let lines: String = (0..20_000).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spoolctl"))
        .args(["-q", "freeze", "enqueue", "-"])
        .env("SPOOL_REDIS_URL", server.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut pipe = child.stdin.take().context("stdin")?;
    pipe.write_all(lines.as_bytes())?;
    drop(pipe);
    let mut c = server.connection()?;
    let started = std::time::Instant::now();
    loop {
        let n: u64 = redis::cmd("ZCARD")
            .arg("spool:{freeze}:ready")
            .query(&mut c)?;
        if n >= 2000 {
            break;
        }
        ensure!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "nothing enqueued in 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    server.pause()?;
    let o = child.wait_with_output()?;
    server.resume()?;
    let e = err(&o);
    let printed = out(&o).lines().count();
    if o.status.success() {
        // It finished before the freeze took hold: nothing to re-send.
        ensure!(printed == 20_000, "{printed}");
        return Ok(());
    }
    ensure!(e.contains("may or may not have been"), "{e}");
    let prefix = e
        .split("--id-prefix ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .context("no --id-prefix in the message")?
        .to_owned();
    let o = spoolctl(
        &server,
        &["-q", "freeze", "enqueue", "-", "--id-prefix", &prefix],
        Some(&lines),
    )?;
    ensure!(o.status.success(), "{}", err(&o));
    let mut c = server.connection()?;
    let n: u64 = redis::cmd("ZCARD")
        .arg("spool:{freeze}:ready")
        .query(&mut c)?;
    ensure!(
        n == 20_000,
        "{n} jobs after the re-send (printed {printed} before)"
    );
    Ok(())
}

/// `SPOOL_REDIS_MIN_REPLICAS` holds for spoolctl too: against a master with
/// no replica, an enqueue is not acknowledged (exit 1, NotReplicated) where
/// it used to print an id no replica had.
#[test]
fn enqueue_honours_min_replicas() -> Result<()> {
    let server = RedisServer::start()?;
    let o = Command::new(env!("CARGO_BIN_EXE_spoolctl"))
        .args(["enqueue", "--payload", "{}"])
        .env("SPOOL_REDIS_URL", server.url())
        .env("SPOOL_REDIS_MIN_REPLICAS", "1")
        .output()?;
    ensure!(o.status.code() == Some(1), "{:?}: {}", o.status, err(&o));
    ensure!(err(&o).contains("replicas"), "{}", err(&o));
    let bad = Command::new(env!("CARGO_BIN_EXE_spoolctl"))
        .args(["stats"])
        .env("SPOOL_REDIS_URL", server.url())
        .env("SPOOL_REDIS_MIN_REPLICAS", "99")
        .output()?;
    ensure!(bad.status.code() == Some(2), "{:?}", bad.status);
    Ok(())
}

#[test]
fn enqueue_flow_prints_the_tree_in_document_order_and_inspect_shows_it() -> Result<()> {
    let server = RedisServer::start()?;
    let doc = r#"{
      "queue": "joins",
      "payload": {"join": true},
      "options": {"id": "movie", "max_attempts": 2},
      "on_child_failure": "continue",
      "children": [
        {"payload": {"part": 1}, "options": {"priority": 5, "timeout": "90s"}},
        {"payload": {"part": 2},
         "children": [{"payload": {"frame": 1}, "options": {"id": "frame-1", "delay": "1h"}}]}
      ]
    }"#;
    let o = spoolctl(&server, &["enqueue", "--flow", "-"], Some(doc))?;
    ensure!(o.status.success(), "{}", err(&o));
    let ids: Vec<String> = out(&o).lines().map(str::to_owned).collect();
    ensure!(
        ids.len() == 4 && ids[0] == "movie" && ids[3] == "frame-1",
        "{ids:?}"
    );

    // The parent waits for both children; the second waits for its own.
    let o = spoolctl(&server, &["-q", "joins", "inspect", "movie"], None)?;
    ensure!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    ensure!(text.contains("state        waiting"), "{text}");
    ensure!(
        text.contains("children     2 (on child failure: continue)"),
        "{text}"
    );
    ensure!(text.contains(&ids[1]) && text.contains(&ids[2]), "{text}");
    let o = spoolctl(
        &server,
        &["-q", "joins", "inspect", &ids[2], "--json"],
        None,
    )?;
    let v: serde_json::Value = serde_json::from_str(&out(&o))?;
    ensure!(v["parent"] == "movie" && v["state"] == "waiting", "{v}");
    ensure!(v["children"][0]["id"] == "frame-1", "{v}");
    let o = spoolctl(
        &server,
        &["-q", "joins", "inspect", "frame-1", "--json"],
        None,
    )?;
    let v: serde_json::Value = serde_json::from_str(&out(&o))?;
    ensure!(
        v["state"] == "scheduled" && v["parent"] == ids[2].as_str(),
        "{v}"
    );

    // A child in another queue (a single server allows it): it lands there.
    let o = spoolctl(
        &server,
        &["enqueue", "--flow", "-"],
        Some(
            r#"{"queue": "joins", "payload": 0, "options": {"id": "cross"},
                 "children": [{"queue": "gpu", "payload": 1, "options": {"id": "on-gpu"}}]}"#,
        ),
    )?;
    ensure!(o.status.success(), "{}", err(&o));
    let o = spoolctl(&server, &["-q", "gpu", "inspect", "on-gpu", "--json"], None)?;
    let v: serde_json::Value = serde_json::from_str(&out(&o))?;
    ensure!(v["state"] == "ready" && v["parent"] == "cross", "{v}");
    ensure!(v["parent_queue"] == "joins", "{v}");

    // Sent again: the same ids, nothing new.
    let again = spoolctl(&server, &["enqueue", "--flow", "-"], Some(doc))?;
    ensure!(again.status.success(), "{}", err(&again));
    ensure!(
        out(&again).lines().collect::<Vec<_>>()
            == ids.iter().map(String::as_str).collect::<Vec<_>>()
    );

    // Bad documents: a clear message, exit 2, nothing enqueued.
    for (bad, says) in [
        (
            r#"{"payload": 1, "children": [{"payload": 2, "queue": "has space"}]}"#,
            "flow.children[0]: invalid queue name",
        ),
        (
            r#"{"payload": 1, "on_child_failure": "maybe"}"#,
            "unknown variant",
        ),
        (
            r#"{"payload": 1, "children": [{"payload": 2, "options": {"delay": "soon"}}]}"#,
            "flow.children[0]: invalid options.delay",
        ),
        (
            r#"{"payload": 1, "children": [{"payload": 2, "options": {"priorty": 1}}]}"#,
            "unknown field",
        ),
        (r#"{"children": []}"#, "missing field `payload`"),
    ] {
        let o = spoolctl(&server, &["-q", "bad", "enqueue", "--flow", "-"], Some(bad))?;
        ensure!(
            o.status.code() == Some(2),
            "{bad}: {:?} {}",
            o.status,
            err(&o)
        );
        ensure!(err(&o).contains(says), "{bad}: {}", err(&o));
    }
    let o = spoolctl(&server, &["-q", "bad", "stats", "--json"], None)?;
    let v: serde_json::Value = serde_json::from_str(&out(&o))?;
    ensure!(v["ready"] == 0 && v["waiting"] == 0, "{v}");
    Ok(())
}
