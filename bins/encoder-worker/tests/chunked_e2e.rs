//! A chunked encode end to end: `spoolctl encode --chunked 15s` enqueues the
//! plan, the worker binary plans a flow of chunks and a join, one worker is
//! SIGKILLed while it encodes a chunk, and the others finish: only that
//! chunk ran twice, the output has every frame, and the chunks are gone.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use spool_testkit::{self as tk, RedisServer, WorkerProcess, workspace_binary};

const WORKER: &str = env!("CARGO_BIN_EXE_spool-encoder-worker");
const SECS: u32 = 150;

fn worker(url: &str, input: &Path, output: &Path) -> Result<WorkerProcess> {
    let (ins, outs) = (input.display().to_string(), output.display().to_string());
    let env = [
        ("SPOOL_QUEUE", "encode"),
        ("SPOOL_INPUT_ROOT", ins.as_str()),
        ("SPOOL_OUTPUT_ROOT", outs.as_str()),
        ("SPOOL_CONCURRENCY", "1"),
        // A killed worker's chunk comes back after its lease: short here.
        ("SPOOL_LEASE", "3s"),
    ];
    let mut w = WorkerProcess::spawn(Path::new(WORKER), url, &env)?;
    w.wait_ready(Duration::from_secs(30))?;
    Ok(w)
}

fn spoolctl(url: &str, args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new(workspace_binary("spoolctl", "spoolctl")?)
        .args(args)
        .env("SPOOL_REDIS_URL", url)
        .env("SPOOL_QUEUE", "encode")
        .output()?)
}

fn inspect(url: &str, id: &str) -> Result<serde_json::Value> {
    let o = spoolctl(url, &["inspect", id, "--json"])?;
    Ok(serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null))
}

/// Polls job `id` until `done` says so, or fails after `secs`.
fn wait_for(
    url: &str,
    id: &str,
    secs: u64,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value> {
    let start = Instant::now();
    loop {
        let v = inspect(url, id)?;
        if done(&v) {
            return Ok(v);
        }
        if v["state"] == "dead" {
            bail!("{id} died: {v}");
        }
        if start.elapsed() > Duration::from_secs(secs) {
            bail!("{id} did not get there in {secs} s: {v}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_chunked_encode_survives_a_worker_killed_mid_chunk() -> Result<()> {
    let server = RedisServer::start()?;
    let url = server.url();
    let dir = tempfile::tempdir()?;
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input)?;
    std::fs::create_dir_all(&output)?;
    tk::chunk_source(&input.join("src.mp4"), SECS)?;

    // One worker first: it plans, then takes the chunks one by one.
    let mut a = worker(&url, &input, &output)?;
    let o = spoolctl(
        &url,
        &[
            "encode",
            "src.mp4",
            "--out",
            "films/joined",
            "--height",
            "240",
            "--quality",
            "23",
            "--preset",
            "medium",
            "--hw",
            "cpu",
            "--chunked",
            "15s",
        ],
    )?;
    ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8(o.stdout)?.trim().to_owned();
    let plan = wait_for(&url, &id, 60, |v| v["state"] == "completed")?;
    let join = plan["result"]["chunked"]["join"]
        .as_str()
        .context("the plan names no join")?
        .to_owned();
    let n = plan["result"]["chunked"]["chunks"]
        .as_u64()
        .context("chunk count")?;
    ensure!(n == 10, "{plan}");

    // Kill it in the middle of its third chunk, then bring two others.
    let victim = format!("{id}.c00002");
    wait_for(&url, &victim, 120, |v| v["state"] == "active")?;
    a.kill();
    // The join, waiting, shows how far the whole encode has got: the audio
    // and the first two chunks have ended, of eleven parts.
    let waiting = inspect(&url, &join)?;
    ensure!(
        waiting["state"] == "waiting"
            && waiting["progress"]["phase"] == "children"
            && waiting["progress"]["of"] == n + 1
            && waiting["progress"]["ended"].as_u64() >= Some(3),
        "{waiting}"
    );
    let _b = worker(&url, &input, &output)?;
    let _c = worker(&url, &input, &output)?;

    let done = wait_for(&url, &join, 300, |v| v["state"] == "completed")?;
    for i in 0..n {
        let c = inspect(&url, &format!("{id}.c{i:05}"))?;
        let want = if i == 2 { 2 } else { 1 };
        ensure!(
            c["state"] == "completed" && c["attempts"] == want,
            "chunk {i}: {c}"
        );
    }
    let out = &done["result"]["outputs"][0];
    ensure!(out["frames"] == u64::from(SECS) * 25, "{out}");
    let path = Path::new(out["path"].as_str().context("path")?).to_owned();
    ensure!(tk::decoded_frames(&path)? == u64::from(SECS) * 25);
    let errors = tk::decode_errors(&path)?;
    ensure!(errors.is_empty(), "ffmpeg -v error: {errors}");
    // The chunks are removed after the join.
    let left: Vec<_> = std::fs::read_dir(output.join("films"))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("spool-chunks-"))
        .collect();
    ensure!(left.is_empty(), "chunk directories left: {left:?}");
    Ok(())
}
