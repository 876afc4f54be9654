//! End to end: spoolctl enqueues an encode of a generated clip, the worker
//! binary produces it, and `spoolctl inspect --json` shows the result.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use spool_testkit::{RedisServer, WorkerProcess, workspace_binary};

const WORKER: &str = env!("CARGO_BIN_EXE_spool-encoder-worker");

fn clip(path: &Path) -> Result<()> {
    Ok(spool_testkit::lavfi_clip(path, 640, 360, 25, 3)?)
}

/// The encoder worker on `url` with these roots and `extra` settings, ready.
fn ready_worker(
    url: &str,
    input: &Path,
    output: &Path,
    extra: &[(&str, &str)],
) -> Result<WorkerProcess> {
    let (ins, outs) = (input.display().to_string(), output.display().to_string());
    let mut env = vec![
        ("SPOOL_QUEUE", "encode"),
        ("SPOOL_INPUT_ROOT", ins.as_str()),
        ("SPOOL_OUTPUT_ROOT", outs.as_str()),
    ];
    env.extend_from_slice(extra);
    let mut worker = WorkerProcess::spawn(Path::new(WORKER), url, &env)?;
    worker.wait_ready(Duration::from_secs(30))?;
    Ok(worker)
}

fn spoolctl(url: &str, args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new(workspace_binary("spoolctl", "spoolctl")?)
        .args(args)
        .env("SPOOL_REDIS_URL", url)
        .env("SPOOL_QUEUE", "encode")
        .output()?)
}

#[test]
fn spoolctl_enqueues_an_encode_and_the_worker_produces_it() -> Result<()> {
    let server = RedisServer::start()?;
    let dir = tempfile::tempdir()?;
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input)?;
    std::fs::create_dir_all(&output)?;
    clip(&input.join("clip.mp4"))?;
    let mut worker = ready_worker(&server.url(), &input, &output, &[])?;

    let o = spoolctl(
        &server.url(),
        &[
            "encode",
            "clip.mp4",
            "--out",
            "clip_360",
            "--height",
            "360",
            "--quality",
            "30",
            "--preset",
            "fastest",
        ],
    )?;
    ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8(o.stdout)?.trim().to_owned();

    let w = spoolctl(&server.url(), &["watch", &id])?;
    ensure!(
        w.status.success(),
        "watch: {}\nworker log:\n{}",
        String::from_utf8_lossy(&w.stderr),
        worker.log()
    );

    let o = spoolctl(&server.url(), &["inspect", &id, "--json"])?;
    let info: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    ensure!(
        info["state"] == "completed" && info["attempts"] == 1,
        "{info}"
    );
    let out = &info["result"]["outputs"][0];
    ensure!(
        out["codec"] == "h264" && out["height"] == 360 && out["width"] == 640,
        "{info}"
    );
    ensure!(out["encoder"] == "libx264", "{out}");
    let path = out["path"].as_str().context("path")?;
    ensure!(
        Path::new(path).starts_with(output.canonicalize()?),
        "{path}"
    );
    ensure!(std::fs::metadata(path)?.len() > 0);
    ensure!(
        info["result"]["backend"] == "cpu"
            && info["result"]["backend_reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty())
    );
    ensure!(
        info["progress"]["percent"].as_f64() == Some(100.0),
        "{}",
        info["progress"]
    );

    let (_, metrics) = worker.get("/metrics")?;
    ensure!(
        metrics.contains("spool_encode_frames_total{backend=\"cpu\"} 75"),
        "{metrics}"
    );

    // A job with an impossible spec is dead at once, with the field named.
    let o = spoolctl(
        &server.url(),
        &[
            "enqueue",
            "--payload",
            r#"{"input":"clip.mp4","output":"x","renditions":[{"codec":"h264","height":361}]}"#,
        ],
    )?;
    let bad = String::from_utf8(o.stdout)?.trim().to_owned();
    let start = Instant::now();
    loop {
        let o = spoolctl(&server.url(), &["inspect", &bad, "--json"])?;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        if v["state"] == "dead" {
            let err = v["last_error"].as_str().unwrap_or_default();
            ensure!(
                err.contains("renditions[0].height") && v["attempts"] == 1,
                "{v}"
            );
            break;
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!("the bad job never died: {v}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    worker.signal("TERM")?;
    ensure!(worker.wait_exit(Duration::from_secs(30))?.success());
    Ok(())
}

#[test]
fn bad_settings_exit_2_naming_the_setting() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ok = dir.path().display().to_string();
    let missing = dir.path().join("missing").display().to_string();
    let cases: [(&str, &str, &str); 20] = [
        ("SPOOL_REDIS_URL", "http://nope", "SPOOL_REDIS_URL"),
        ("SPOOL_CONCURRENCY", "0", "SPOOL_CONCURRENCY"),
        ("SPOOL_HW", "quantum", "SPOOL_HW"),
        ("SPOOL_INPUT_ROOT", &missing, "SPOOL_INPUT_ROOT"),
        ("SPOOL_OUTPUT_ROOT", "/proc", "SPOOL_OUTPUT_ROOT"),
        ("SPOOL_S3_BUCKETS", "Media_Bucket", "SPOOL_S3_BUCKETS"),
        ("SPOOL_S3_ENDPOINT", "ftp://minio:9000", "SPOOL_S3_ENDPOINT"),
        ("SPOOL_S3_REGION", "us east 1", "SPOOL_S3_REGION"),
        ("SPOOL_S3_REGION", "US-EAST-1", "SPOOL_S3_REGION"),
        (
            "SPOOL_S3_ENDPOINT",
            "http://minio:9000/#frag",
            "SPOOL_S3_ENDPOINT",
        ),
        ("AWS_ENDPOINT_URL", "ftp://minio:9000", "AWS_ENDPOINT_URL"),
        (
            "AWS_ENDPOINT_URL",
            "http://u:p@minio:9000",
            "AWS_ENDPOINT_URL",
        ),
        ("SPOOL_S3_PART_SIZE", "1024", "SPOOL_S3_PART_SIZE"),
        ("SPOOL_MAX_UPSCALE", "0.5", "SPOOL_MAX_UPSCALE"),
        ("SPOOL_MAX_ENCODE_MEMORY", "1GB", "SPOOL_MAX_ENCODE_MEMORY"),
        ("SPOOL_MAX_JOBS", "0", "SPOOL_MAX_JOBS"),
        ("SPOOL_IDLE_EXIT", "soonish", "SPOOL_IDLE_EXIT"),
        ("SPOOL_SCRATCH_DIR", &missing, "SPOOL_SCRATCH_DIR"),
        ("SPOOL_MAX_INPUT_BYTES", "50GB", "SPOOL_MAX_INPUT_BYTES"),
        ("SPOOL_GPU_DECODE", "maybe", "SPOOL_GPU_DECODE"),
    ];
    for (k, v, named) in cases {
        let o = Command::new(WORKER)
            .env("SPOOL_INPUT_ROOT", &ok)
            .env("SPOOL_OUTPUT_ROOT", &ok)
            .env("SPOOL_METRICS_ADDR", "off")
            .env(k, v)
            .output()?;
        let err = String::from_utf8_lossy(&o.stderr);
        ensure!(o.status.code() == Some(2), "{k}={v}: {:?} {err}", o.status);
        ensure!(
            err.contains(named) && err.lines().count() == 1,
            "{k}={v}: {err}"
        );
    }
    // An endpoint's password never reaches the message.
    let o = Command::new(WORKER)
        .env("SPOOL_S3_ENDPOINT", "http://key:s3cr3t@minio:9000")
        .env("SPOOL_INPUT_ROOT", &ok)
        .env("SPOOL_OUTPUT_ROOT", &ok)
        .output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(
        o.status.code() == Some(2) && !err.contains("s3cr3t") && err.contains("SPOOL_S3_ENDPOINT"),
        "{err}"
    );
    // The password never reaches the message.
    let o = Command::new(WORKER)
        .env("SPOOL_REDIS_URL", "redis://u:s3cr3t@h:notaport")
        .env("SPOOL_INPUT_ROOT", &ok)
        .env("SPOOL_OUTPUT_ROOT", &ok)
        .output()?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(
        o.status.code() == Some(2) && !err.contains("s3cr3t"),
        "{err}"
    );
    Ok(())
}

#[test]
fn the_redis_password_never_leaks() -> Result<()> {
    const PASSWORD: &str = "Zx9-s3cret-Pa55word";
    let server = RedisServer::start_with(spool_testkit::ServerOptions {
        password: Some(PASSWORD.into()),
        ..Default::default()
    })?;
    let url = server.url();
    ensure!(url.contains(PASSWORD));
    let dir = tempfile::tempdir()?;
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input)?;
    std::fs::create_dir_all(&output)?;
    clip(&input.join("clip.mp4"))?;
    let mut worker = ready_worker(
        &url,
        &input,
        &output,
        &[("SPOOL_LOG_FORMAT", "json"), ("RUST_LOG", "debug")],
    )?;
    let mut seen = String::new();
    let mut run = |args: &[&str]| -> Result<()> {
        let o = spoolctl(&url, args)?;
        seen.push_str(&String::from_utf8_lossy(&o.stdout));
        seen.push_str(&String::from_utf8_lossy(&o.stderr));
        Ok(())
    };
    // A good job, a bad spec, a missing input, an unknown id, a bad command.
    run(&[
        "encode", "clip.mp4", "--out", "ok", "--height", "144", "--preset", "fastest",
    ])?;
    run(&[
        "enqueue",
        "--payload",
        r#"{"input":"clip.mp4","output":"x","renditions":[]}"#,
    ])?;
    run(&["encode", "missing.mp4", "--out", "y"])?;
    run(&["inspect", "nope"])?;
    run(&["dead", "list"])?;
    run(&["stats"])?;
    // The good job completes and the two bad ones die: wait for the counters.
    let start = Instant::now();
    let metrics = loop {
        let (_, m) = worker.get("/metrics")?;
        let count = |outcome| {
            spool_testkit::metric_value(
                &m,
                "spool_jobs_total",
                &[("queue", "encode"), ("outcome", outcome)],
            )
        };
        if count("completed") == Some(1.0) && count("dead") == Some(2.0) {
            break m;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "the three jobs never settled:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    seen.push_str(&metrics);
    // A wrong password, and a URL spoolctl cannot parse.
    let wrong = url.replace(PASSWORD, &format!("{PASSWORD}-wrong"));
    let o = Command::new(workspace_binary("spoolctl", "spoolctl")?)
        .args(["--redis-url", &wrong, "stats"])
        .output()?;
    seen.push_str(&String::from_utf8_lossy(&o.stderr));
    let o = Command::new(workspace_binary("spoolctl", "spoolctl")?)
        .args([
            "--redis-url",
            &format!("redis://u:{PASSWORD}@host:notaport"),
            "stats",
        ])
        .output()?;
    seen.push_str(&String::from_utf8_lossy(&o.stderr));
    worker.signal("TERM")?;
    worker.wait_exit(Duration::from_secs(30))?;
    seen.push_str(&worker.log());
    ensure!(
        seen.contains("effective configuration") && seen.contains("***"),
        "the log did not show the masked URL:\n{seen}"
    );
    ensure!(!seen.contains("s3cret"), "the password leaked:\n{seen}");
    Ok(())
}

#[test]
fn sigterm_ends_a_worker_stuck_on_a_silent_http_input_within_the_drain() -> Result<()> {
    use std::io::Read;
    let server = RedisServer::start()?;
    let dir = tempfile::tempdir()?;
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input)?;
    std::fs::create_dir_all(&output)?;
    // Accepts, reads the request, never answers; reports when the socket closes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let tx = tx.clone();
            let _ = tx.send(("accepted", Instant::now()));
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                let _ = tx.send(("closed", Instant::now()));
            });
        }
    });
    let mut worker = ready_worker(
        &server.url(),
        &input,
        &output,
        &[
            ("SPOOL_ALLOW_HTTP", "true"),
            ("SPOOL_HTTP_ALLOW_NETS", "127.0.0.1/32"),
            ("SPOOL_DRAIN_TIMEOUT", "2s"),
        ],
    )?;
    let url = format!("http://127.0.0.1:{port}/never.mp4");
    let o = spoolctl(
        &server.url(),
        &["encode", &url, "--out", "never", "--preset", "fastest"],
    )?;
    ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8(o.stdout)?.trim().to_owned();
    let (what, _) = rx
        .recv_timeout(Duration::from_secs(20))
        .context("the worker never connected")?;
    ensure!(what == "accepted");
    let term = Instant::now();
    worker.signal("TERM")?;
    let status = worker.wait_exit(Duration::from_secs(10))?;
    let took = term.elapsed();
    ensure!(status.success(), "{status:?}\n{}", worker.log());
    // The drain (2 s) plus the release and exit: well inside a grace period.
    let bound = Duration::from_secs(2) + spool_worker::SHUTDOWN_MARGIN + Duration::from_secs(1);
    ensure!(took < bound, "exit took {took:?}, bound {bound:?}");
    let (what, at) = rx
        .recv_timeout(Duration::from_secs(5))
        .context("the socket was never closed")?;
    ensure!(what == "closed" && at - term < Duration::from_secs(5));
    // The job went back to the queue for another worker, attempt not spent.
    let o = spoolctl(&server.url(), &["inspect", &id, "--json"])?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    ensure!(v["state"] == "ready", "{v}");
    Ok(())
}

/// A 2 s limit in the encode spec (`timeout_s`, from `spoolctl encode
/// --timeout 2s`) on a long 1080p `slowest` encode, under a worker cap of an
/// hour: the encode stops within about a second of the limit, the job is
/// dead with "timed out after 2s", and nothing is left in the output root.
#[test]
fn a_time_limit_stops_a_long_encode_and_leaves_nothing() -> Result<()> {
    let server = RedisServer::start()?;
    let dir = tempfile::tempdir()?;
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input)?;
    std::fs::create_dir_all(&output)?;
    spool_testkit::lavfi_clip(&input.join("long.mp4"), 1920, 1080, 25, 20)?;
    let worker = ready_worker(
        &server.url(),
        &input,
        &output,
        &[("SPOOL_MAX_JOB_TIMEOUT", "1h")],
    )?;
    let o = spoolctl(
        &server.url(),
        &[
            "encode",
            "long.mp4",
            "--out",
            "long",
            "--height",
            "1080",
            "--preset",
            "slowest",
            "--hw",
            "cpu",
            "--timeout",
            "2s",
        ],
    )?;
    ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8(o.stdout)?.trim().to_owned();
    let mut started = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    let info = loop {
        let o = spoolctl(&server.url(), &["inspect", &id, "--json"])?;
        let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if started.is_none() && info["state"] == "active" {
            started = Some(Instant::now());
        }
        if info["state"] == "dead" || info["state"] == "completed" {
            break info;
        }
        ensure!(
            Instant::now() < deadline,
            "not ended in 60 s: {info}\n{}",
            worker.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.context("never seen active")?.elapsed();
    ensure!(info["state"] == "dead", "{info}");
    let err = info["last_error"].as_str().unwrap_or_default();
    ensure!(
        err.contains("timed out after 2s (the limit its payload set)"),
        "{err}"
    );
    println!("a 2 s limit ended the encode {took:?} after it was seen active");
    ensure!(
        took < Duration::from_secs(4),
        "the encode ran {took:?} against a 2 s limit"
    );
    // The encoder's thread unwinds x264 and removes its staging directory
    // just after the job is recorded dead.
    let settled = Instant::now();
    loop {
        let left: Vec<_> = std::fs::read_dir(&output)?
            .flatten()
            .map(|e| e.file_name())
            .collect();
        if left.is_empty() {
            break;
        }
        ensure!(
            settled.elapsed() < Duration::from_secs(10),
            "left in the output root 10 s after the job ended: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "output root empty {:?} after the job ended",
        settled.elapsed()
    );
    Ok(())
}

/// Damages an MPEG-TS file's payload bytes (never its packet headers) in
/// its middle third, deterministically: the H.264 decoder then warns about
/// broken macroblocks and conceals them.
fn damage_ts(path: &Path) -> Result<()> {
    let mut data = std::fs::read(path)?;
    let packets = data.len() / 188;
    let mut x: u32 = 0x2545_f491;
    for p in (packets / 3..2 * packets / 3).step_by(7) {
        for b in &mut data[p * 188 + 20..p * 188 + 120] {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
    }
    std::fs::write(path, data)?;
    Ok(())
}

/// Two encodes at once in one worker, one of a damaged input: FFmpeg's
/// warnings about it (from the decoder's frame threads too) are in that
/// job's log (`spoolctl inspect --log`) and not in the other's.
#[test]
fn ffmpeg_warnings_reach_the_log_of_the_job_they_are_about() -> Result<()> {
    let server = RedisServer::start()?;
    let dir = tempfile::tempdir()?;
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input)?;
    std::fs::create_dir_all(&output)?;
    spool_testkit::lavfi_clip(&input.join("clean.mp4"), 640, 360, 25, 10)?;
    let damaged = input.join("damaged.ts");
    spool_testkit::lavfi_video(&damaged, 640, 360, 10.0, &[])?;
    damage_ts(&damaged)?;
    let worker = ready_worker(
        &server.url(),
        &input,
        &output,
        &[("SPOOL_CONCURRENCY", "2")],
    )?;
    let mut ids = Vec::new();
    for (file, out) in [("damaged.ts", "damaged"), ("clean.mp4", "clean")] {
        let o = spoolctl(
            &server.url(),
            &[
                "encode", file, "--out", out, "--height", "360", "--preset", "slow", "--hw", "cpu",
                "--audio", "none",
            ],
        )?;
        ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        ids.push(String::from_utf8(o.stdout)?.trim().to_owned());
    }
    let inspect = |id: &str| -> Result<serde_json::Value> {
        let o = spoolctl(&server.url(), &["inspect", id, "--json", "--log"])?;
        Ok(serde_json::from_slice(&o.stdout)?)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let infos = loop {
        let infos = ids
            .iter()
            .map(|id| inspect(id))
            .collect::<Result<Vec<_>>>()?;
        if infos
            .iter()
            .all(|i| i["state"] == "completed" || i["state"] == "dead")
        {
            break infos;
        }
        ensure!(
            Instant::now() < deadline,
            "not ended in 120 s: {infos:?}\n{}",
            worker.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // They ran at the same time, or the attribution proves nothing.
    let span = |i: &serde_json::Value| {
        (
            i["started_at_ms"].as_u64().unwrap_or(0),
            i["finished_at_ms"].as_u64().unwrap_or(0),
        )
    };
    let ((s0, e0), (s1, e1)) = (span(&infos[0]), span(&infos[1]));
    ensure!(s0 < e1 && s1 < e0, "the encodes did not overlap: {infos:?}");
    let ffmpeg_lines = |i: &serde_json::Value| -> Vec<String> {
        i["log"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|l| l["message"].as_str())
                    .filter(|m| m.starts_with("[h264]"))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let bad = ffmpeg_lines(&infos[0]);
    ensure!(
        !bad.is_empty(),
        "no FFmpeg warning in the damaged job's log: {}",
        infos[0]
    );
    ensure!(
        infos[0]["log"][0]["level"] != "info",
        "warnings and errors: {}",
        infos[0]["log"][0]
    );
    let clean = ffmpeg_lines(&infos[1]);
    ensure!(
        clean.is_empty(),
        "the clean job got FFmpeg's lines: {clean:?}"
    );
    println!(
        "damaged job ({}): {} FFmpeg lines, e.g. {:?}; clean job ({}): none",
        infos[0]["state"],
        bad.len(),
        bad[0],
        infos[1]["state"]
    );
    // The human form prints them too.
    let o = spoolctl(&server.url(), &["inspect", &ids[0], "--log"])?;
    let text = String::from_utf8(o.stdout)?;
    ensure!(text.contains("[h264]"), "{text}");
    Ok(())
}

/// What encoder libraries print to stderr themselves (x265's banner and
/// settings) comes through the logger: with JSON logs, every line the
/// worker writes is a JSON object, and x265's lines are among them as
/// events (before: plain lines broke the JSON stream).
#[test]
fn encoder_library_output_keeps_json_logs_json() -> Result<()> {
    let server = RedisServer::start()?;
    let dir = tempfile::tempdir()?;
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input)?;
    std::fs::create_dir_all(&output)?;
    spool_testkit::lavfi_clip(&input.join("clip.mp4"), 160, 120, 25, 1)?;
    let mut worker = ready_worker(
        &server.url(),
        &input,
        &output,
        &[("SPOOL_LOG_FORMAT", "json")],
    )?;
    let o = spoolctl(
        &server.url(),
        &[
            "encode", "clip.mp4", "--out", "hevc", "--codec", "hevc", "--height", "120",
            "--preset", "fastest",
        ],
    )?;
    ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8(o.stdout)?.trim().to_owned();
    let w = spoolctl(&server.url(), &["watch", &id])?;
    ensure!(w.status.success(), "{}", worker.log());
    // The library's lines reach the log a moment later, from its thread.
    let start = Instant::now();
    while !worker.log().contains("x265") && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    worker.signal("TERM")?;
    worker.wait_exit(Duration::from_secs(30))?;
    let log = worker.log();
    let mut lib_lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("a log line that is not JSON: {line:?}"))?;
        if v["target"] == "encoder_lib" {
            lib_lines += 1;
        }
    }
    ensure!(
        lib_lines > 0 && log.contains("x265"),
        "x265's output never reached the log:\n{log}"
    );
    Ok(())
}
