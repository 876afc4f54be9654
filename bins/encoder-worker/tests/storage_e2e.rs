//! End to end with object storage: the worker binary configured by
//! `SPOOL_S3_*` against a real S3-compatible server, jobs enqueued by
//! `spoolctl encode` naming `s3://` locations, and the credentials nowhere in
//! what a person or a log collector sees.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use spool_testkit::{RedisServer, S3_ACCESS_KEY, S3_SECRET_KEY, S3Server, WorkerProcess};

const WORKER: &str = env!("CARGO_BIN_EXE_spool-encoder-worker");

fn spoolctl(url: &str, args: &[&str]) -> Result<std::process::Output> {
    Ok(
        Command::new(spool_testkit::workspace_binary("spoolctl", "spoolctl")?)
            .args(args)
            .env("SPOOL_REDIS_URL", url)
            .env("SPOOL_QUEUE", "encode")
            .output()?,
    )
}

/// Waits until job `id` is completed or dead; returns `inspect --json`.
fn settled(url: &str, id: &str) -> Result<serde_json::Value> {
    let start = Instant::now();
    loop {
        let o = spoolctl(url, &["inspect", id, "--json"])?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        if v["state"] == "completed" || v["state"] == "dead" {
            return Ok(v);
        }
        if start.elapsed() > Duration::from_secs(90) {
            bail!("job {id} never settled: {v}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Input, output and scratch directories under a new temporary directory.
fn roots() -> Result<(tempfile::TempDir, [std::path::PathBuf; 3])> {
    let dir = tempfile::tempdir()?;
    let roots = ["in", "out", "scratch"].map(|d| dir.path().join(d));
    for d in &roots {
        std::fs::create_dir_all(d)?;
    }
    Ok((dir, roots))
}

/// The worker on `url` with `roots`, the object storage settings `s3_env`
/// and `extra` settings, ready.
fn ready_worker(
    url: &str,
    roots: &[std::path::PathBuf; 3],
    s3_env: &[(String, String)],
    extra: &[(&str, &str)],
) -> Result<WorkerProcess> {
    let [ins, outs, scr] = roots.each_ref().map(|p| p.display().to_string());
    let mut env: Vec<(&str, &str)> = s3_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.extend([
        ("SPOOL_QUEUE", "encode"),
        ("SPOOL_INPUT_ROOT", ins.as_str()),
        ("SPOOL_OUTPUT_ROOT", outs.as_str()),
        ("SPOOL_SCRATCH_DIR", scr.as_str()),
    ]);
    env.extend_from_slice(extra);
    let mut worker = WorkerProcess::spawn(Path::new(WORKER), url, &env)?;
    worker.wait_ready(Duration::from_secs(30))?;
    Ok(worker)
}

#[test]
fn the_worker_encodes_s3_to_s3_and_never_shows_the_credentials() -> Result<()> {
    let redis = RedisServer::start()?;
    let s3 = S3Server::start()?;
    let (dir, roots) = roots()?;
    let clip = dir.path().join("clip.mp4");
    spool_testkit::lavfi_clip(&clip, 640, 360, 25, 2)?;
    s3.put("media", "src/clip.mp4", std::fs::read(&clip)?)?;
    let url = redis.url();
    let mut worker = ready_worker(
        &url,
        &roots,
        &s3.worker_env("media"),
        &[("SPOOL_LOG_FORMAT", "json"), ("RUST_LOG", "debug")],
    )?;
    let mut seen = String::new();

    // A two-rung HLS ladder from s3 to s3.
    let o = spoolctl(
        &url,
        &[
            "encode",
            "s3://media/src/clip.mp4",
            "--out",
            "s3://media/vod/clip",
            "--height",
            "360",
            "--height",
            "180",
            "--hls",
            "1",
            "--preset",
            "fastest",
        ],
    )?;
    ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8(o.stdout)?.trim().to_owned();
    let v = settled(&url, &id)?;
    seen.push_str(&v.to_string());
    ensure!(v["state"] == "completed", "{v}\n{}", worker.log());
    let objects = v["result"]["objects"].as_array().context("objects")?;
    let listed = s3.list("media", "vod/")?;
    ensure!(
        objects.len() == listed.len() && !listed.is_empty(),
        "result {objects:?} vs bucket {listed:?}"
    );
    for o in objects {
        ensure!(
            o["etag"].is_string() && o["size_bytes"].as_u64() > Some(0),
            "{o}"
        );
    }
    ensure!(
        v["result"]["master_playlist"] == "s3://media/vod/clip/master.m3u8",
        "{v}"
    );
    ensure!(v["progress"]["phase"] == "upload", "{}", v["progress"]);

    // A missing object and a bucket the worker does not allow: dead at once,
    // the error naming bucket and key.
    for (input, needle) in [
        ("s3://media/src/missing.mp4", "s3://media/src/missing.mp4"),
        ("s3://private/x.mp4", "SPOOL_S3_BUCKETS"),
    ] {
        let o = spoolctl(&url, &["encode", input, "--out", "s3://media/never"])?;
        ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let id = String::from_utf8(o.stdout)?.trim().to_owned();
        let v = settled(&url, &id)?;
        seen.push_str(&v.to_string());
        let err = v["last_error"].as_str().unwrap_or_default();
        ensure!(
            v["state"] == "dead" && v["attempts"] == 1 && err.contains(needle),
            "{v}"
        );
    }
    // spoolctl refuses a path trick before enqueueing, exit 2.
    let o = spoolctl(
        &url,
        &["encode", "s3://media/a/../../etc", "--out", "s3://media/x"],
    )?;
    ensure!(o.status.code() == Some(2), "{o:?}");
    seen.push_str(&String::from_utf8_lossy(&o.stderr));

    let (_, metrics) = worker.get("/metrics")?;
    seen.push_str(&metrics);
    worker.signal("TERM")?;
    worker.wait_exit(Duration::from_secs(30))?;
    seen.push_str(&worker.log());
    ensure!(seen.contains("effective configuration"), "{seen}");
    ensure!(
        !seen.contains(S3_SECRET_KEY) && !seen.contains(S3_ACCESS_KEY),
        "a credential leaked:\n{seen}"
    );
    Ok(())
}

/// SIGTERM while an upload request hangs (a store that accepts the
/// connection and never answers): the worker still exits within its
/// shutdown bound (`SPOOL_DRAIN_TIMEOUT` + 4 s, plus the 1 s it gives encode
/// threads), with the job released for another worker (before: it waited
/// for the hung request's deadline, and without one, forever).
#[test]
fn sigterm_during_a_hung_upload_exits_within_the_shutdown_bound() -> Result<()> {
    let redis = RedisServer::start()?;
    let s3 = S3Server::start()?;
    s3.put("media", "seed", b"x".to_vec())?;
    let proxy = spool_testkit::FaultProxy::start(&s3.endpoint())?;
    // Every write hangs; reads (the ownership check) answer.
    proxy.add(spool_testkit::Rule::new(
        Some("PUT"),
        "/media/",
        spool_testkit::Fault::Stall,
    ));
    let (_dir, roots) = roots()?;
    spool_testkit::lavfi_clip(&roots[0].join("clip.mp4"), 320, 180, 25, 4)?;
    let mut s3_env = s3.worker_env("media");
    for (k, v) in &mut s3_env {
        if k == "SPOOL_S3_ENDPOINT" {
            *v = proxy.endpoint();
        }
    }
    let url = redis.url();
    let mut worker = ready_worker(&url, &roots, &s3_env, &[("SPOOL_DRAIN_TIMEOUT", "1s")])?;
    let o = spoolctl(
        &url,
        &[
            "encode",
            "clip.mp4",
            "--out",
            "s3://media/hung.mp4",
            "--height",
            "180",
            "--preset",
            "fastest",
        ],
    )?;
    ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8(o.stdout)?.trim().to_owned();
    // Wait until the upload's PUT is hanging in the proxy.
    let start = Instant::now();
    let test_start = start;
    while !proxy.seen().iter().any(|r| r.starts_with("PUT ")) {
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "the upload never started: {}",
            worker.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("the upload hung {:?} after the enqueue", start.elapsed());
    let signalled = Instant::now();
    worker.signal("TERM")?;
    let status = worker.wait_exit(Duration::from_secs(30))?;
    let took = signalled.elapsed();
    eprintln!("exited {took:?} after SIGTERM with a hung upload");
    ensure!(status.success(), "{status:?}\n{}", worker.log());
    // Generous over the documented 1 + 4 + 1 s: the machine may be loaded.
    ensure!(
        took < Duration::from_secs(15),
        "took {took:?} to exit\n{}",
        worker.log()
    );
    let o = spoolctl(&url, &["inspect", &id, "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    ensure!(v["state"] == "ready", "the job must be released: {v}");
    eprintln!("checked {:?} after the enqueue", test_start.elapsed());
    Ok(())
}
