//! Encode speed: the in-process pipeline against the `ffmpeg` CLI with
//! identical settings, in the same run, on a generated 1080p clip.
//!
//! `cargo bench -p spool-benches --bench encode`. Settings:
//! `SPOOL_BENCH_SECONDS` (clip length, default 10), `SPOOL_BENCH_ROUNDS` (3;
//! the best round of each side counts, which filters out noise from other
//! work on a shared machine). Cases, each against the CLI doing the same:
//! - `cpu`: libx264, decode and scale on the CPU (every machine);
//! - `nvenc`: NVENC from system memory (a GPU with NVENC);
//! - `gpu_nvenc`: the GPU-resident pipeline, NVDEC → `scale_cuda` → NVENC,
//!   against `-hwaccel cuda -hwaccel_output_format cuda … scale_cuda … h264_nvenc`
//!   (a GPU with NVENC);
//! - `gpu_x264`: NVDEC → `scale_cuda` → copy out → libx264 (a CUDA GPU
//!   without NVENC, an H100).
//!
//! Each prints fps and CPU seconds per 1,000 frames for both sides (spool's
//! own process, the CLI as a child, from `/proc/self/stat`). Target (issues
//! 4 and 17): in-process fps / CLI fps at least 0.97, and no more CPU per
//! frame than the CLI.
//!
//! - `chunked` (issue 36): `spool-encoder-worker` processes with
//!   `SPOOL_ENCODER_THREADS=1` on a fresh Redis: `SPOOL_BENCH_WORKERS`
//!   (default: the machine's cores) workers encoding a chunked job
//!   (`SPOOL_BENCH_CHUNK_SECONDS` chunks, default 6) against one worker
//!   encoding the same spec unchunked, alternating, from enqueue to the
//!   outputs. It prints the speed-up, and the plan and join times apart.
//!   Source: 640x360 at 30 fps, `SPOOL_BENCH_CHUNKED_SOURCE` seconds
//!   (default 60), a keyframe a second. Target on a 2-core machine: 1.8x.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use spool_benches::setting;
use spool_encoder::{CancellationToken, EncodeSpec, Encoder, EncoderConfig, GpuDecode, Limits};

/// CPU seconds used so far by this process and by its waited-for
/// children: `/proc/self/stat` fields 14–17 (utime, stime, cutime,
/// cstime), in clock ticks of 1/100 s (`USER_HZ` on Linux).
fn cpu_seconds() -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) may hold spaces; fields follow its ')'.
    let rest = stat.rsplit_once(')').context("/proc/self/stat")?.1;
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse::<f64>().map(|t| t / 100.0))
        .collect::<Result<_, _>>()?;
    ensure!(f.len() == 4, "/proc/self/stat: {rest}");
    Ok((f[0] + f[1], f[2] + f[3]))
}

fn ffmpeg(args: &[&str]) -> Result<()> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .output()
        .context("ffmpeg CLI missing")?;
    ensure!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn frames(path: &Path) -> Result<f64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_packets",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_packets",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn main() -> Result<()> {
    let secs = setting("SPOOL_BENCH_SECONDS", 10);
    let rounds = setting("SPOOL_BENCH_ROUNDS", 3);
    let dir = tempfile::tempdir()?;
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input)?;
    std::fs::create_dir_all(&output)?;
    let src = input.join("src.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size=1920x1080:rate=30:duration={secs}"),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-qp",
        "10",
        "-pix_fmt",
        "yuv420p",
        src.to_str().context("path")?,
    ])?;
    let n = frames(&src)?;
    let cpu_decode = Encoder::new(EncoderConfig::new(&input, &output))?;
    let mut gpu_cfg = EncoderConfig::new(&input, &output);
    gpu_cfg.gpu_decode = GpuDecode::On;
    let gpu_decode = Encoder::new(gpu_cfg)?;
    let nvenc = cpu_decode.gpus().reason.is_none();
    let cuda = spool_encoder::gpu::check_cuda_device(0);
    let cq = ["-rc", "vbr", "-cq", "23", "-b:v", "0"];
    let hwaccel = ["-hwaccel", "cuda", "-hwaccel_output_format", "cuda"];
    let mut cases: Vec<Case<'_>> = vec![Case {
        name: "cpu",
        encoder: &cpu_decode,
        hardware: "cpu",
        cli_in: vec![],
        vf: "scale=1920:1080,format=yuv420p",
        cli_out: vec!["-c:v", "libx264", "-preset", "veryfast", "-crf", "23"],
    }];
    if nvenc {
        let mut out = vec!["-c:v", "h264_nvenc", "-preset", "p3"];
        out.extend(cq);
        cases.push(Case {
            name: "nvenc",
            encoder: &cpu_decode,
            hardware: "nvenc",
            cli_in: vec![],
            vf: "scale=1920:1080,format=yuv420p",
            cli_out: out.clone(),
        });
        if cuda.is_ok() {
            cases.push(Case {
                name: "gpu_nvenc",
                encoder: &gpu_decode,
                hardware: "nvenc",
                cli_in: hwaccel.to_vec(),
                vf: "scale_cuda=w=1920:h=1080:format=nv12:passthrough=0",
                cli_out: out,
            });
        }
    }
    match &cuda {
        Ok(()) => cases.push(Case {
            name: "gpu_x264",
            encoder: &gpu_decode,
            hardware: "cpu",
            cli_in: hwaccel.to_vec(),
            vf: "scale_cuda=w=1920:h=1080:format=yuv420p:passthrough=0,hwdownload,format=yuv420p",
            cli_out: vec!["-c:v", "libx264", "-preset", "veryfast", "-crf", "23"],
        }),
        Err(why) => println!("GPU-resident cases skipped: {why}"),
    }
    if !nvenc {
        println!("NVENC cases skipped: {:?}", cpu_decode.gpus().reason);
    }
    println!(
        "clip: 1920x1080, {n} frames; settings: h264, preset fast (x264 veryfast / nvenc p3), quality 23, gop 60, no audio"
    );
    for case in &cases {
        run_case(case, &src, &output, n, rounds)?;
    }
    chunked_case(rounds)
}

/// One encode through `workers` worker processes from enqueue to its
/// outputs: (seconds, plan seconds, join seconds, chunks).
fn through_workers(
    bin: &Path,
    input: &Path,
    output: &Path,
    spec: &serde_json::Value,
    workers: usize,
    id: &str,
) -> Result<(f64, f64, f64, u64)> {
    let server = spool_testkit::RedisServer::start()?;
    let (ins, outs) = (input.display().to_string(), output.display().to_string());
    let env = [
        ("SPOOL_QUEUE", "encode"),
        ("SPOOL_INPUT_ROOT", ins.as_str()),
        ("SPOOL_OUTPUT_ROOT", outs.as_str()),
        ("SPOOL_CONCURRENCY", "1"),
        ("SPOOL_ENCODER_THREADS", "1"),
        ("SPOOL_HW", "cpu"),
    ];
    let mut procs = Vec::new();
    for _ in 0..workers {
        let mut w = spool_testkit::WorkerProcess::spawn(bin, &server.url(), &env)?;
        w.wait_ready(std::time::Duration::from_secs(60))?;
        procs.push(w);
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let q = spool_queue::Client::connect(&server.url())
            .await?
            .queue("encode")?;
        let wait = |id: String| {
            let q = q.clone();
            async move {
                loop {
                    let info = q.info(&id).await?;
                    match info.state {
                        spool_queue::JobState::Completed => return anyhow::Ok(info),
                        spool_queue::JobState::Dead => {
                            anyhow::bail!("{id} died: {:?}", info.last_error)
                        }
                        _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                    }
                }
            }
        };
        let t = Instant::now();
        q.enqueue(
            serde_json::to_vec(spec)?,
            spool_queue::JobOptions::default().id(id),
        )
        .await?;
        let first = wait(id.to_owned()).await?;
        let result = first.result.unwrap_or_default();
        let Some(join) = result["chunked"]["join"].as_str() else {
            return Ok((t.elapsed().as_secs_f64(), 0.0, 0.0, 1));
        };
        let plan_s = result["chunked"]["plan_s"].as_f64().unwrap_or(0.0);
        let chunks = result["chunked"]["chunks"].as_u64().unwrap_or(0);
        let joined = wait(join.to_owned()).await?;
        let secs = t.elapsed().as_secs_f64();
        let join_s = joined.result.unwrap_or_default()["wall_s"]
            .as_f64()
            .unwrap_or(0.0);
        Ok((secs, plan_s, join_s, chunks))
    })
}

/// Issue 36's case: a chunked encode on every core against one process.
fn chunked_case(rounds: u64) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = setting("SPOOL_BENCH_WORKERS", cores as u64).max(1) as usize;
    let secs = setting("SPOOL_BENCH_CHUNKED_SOURCE", 60);
    let chunk_s = setting("SPOOL_BENCH_CHUNK_SECONDS", 6);
    let bin =
        spool_testkit::workspace_binary_release("spool-encoder-worker", "spool-encoder-worker")?;
    let dir = tempfile::tempdir()?;
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input)?;
    std::fs::create_dir_all(&output)?;
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size=640x360:rate=30:duration={secs}"),
        "-f",
        "lavfi",
        "-i",
        &format!("sine=frequency=440:sample_rate=48000:duration={secs}"),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "30",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        input.join("src.mp4").to_str().context("path")?,
    ])?;
    let spec = |out: &str, chunked: bool| {
        let mut v = serde_json::json!({
            "input": "src.mp4", "output": out, "hardware": "cpu",
            "renditions": [{"codec": "h264", "height": 360, "quality": 23, "preset": "fast"}],
        });
        if chunked {
            v["chunking"] = serde_json::json!({ "target_s": chunk_s });
        }
        v
    };
    let (mut single, mut chunked) = (Vec::new(), Vec::new());
    let (mut plans, mut joins) = (Vec::new(), Vec::new());
    let mut chunks = 0;
    for r in 0..rounds {
        let one = |out: &str, c: bool, w: usize| {
            through_workers(
                &bin,
                &input,
                &output,
                &spec(out, c),
                w,
                &format!("{out}-job"),
            )
        };
        let s = one(&format!("single{r}"), false, 1)?;
        let c = one(&format!("chunked{r}"), true, workers)?;
        single.push(s.0);
        chunked.push(c.0);
        plans.push(c.1);
        joins.push(c.2);
        chunks = c.3;
        println!(
            "chunked: round {r}: one process {:.2} s, {workers} processes chunked {:.2} s (plan {:.2} s, join {:.2} s, {} chunks)",
            s.0, c.0, c.1, c.2, c.3
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (s, c) = (median(&mut single), median(&mut chunked));
    let (p, j) = (median(&mut plans), median(&mut joins));
    println!(
        "chunked: {secs} s of 640x360 at 30 fps, x264 fast, one thread per process; median of {rounds} rounds"
    );
    println!(
        "spool encode_chunked single_s={s:.2} chunked_s={c:.2} speedup={:.2} workers={workers} chunks={chunks} plan_s={p:.2} join_s={j:.2}",
        s / c
    );
    Ok(())
}

/// One comparison: spool's `hardware` on `encoder` against the CLI with
/// `cli_in` before its input, `vf`, and `cli_out`.
struct Case<'a> {
    name: &'static str,
    encoder: &'a Encoder,
    hardware: &'static str,
    cli_in: Vec<&'static str>,
    vf: &'static str,
    cli_out: Vec<&'static str>,
}

fn run_case(case: &Case<'_>, src: &Path, output: &Path, n: f64, rounds: u64) -> Result<()> {
    let spec = EncodeSpec::from_json(
        format!(
            r#"{{"input":"src.mp4","output":"ours.mp4","hardware":"{}","audio":{{"mode":"none"}},
               "renditions":[{{"codec":"h264","height":1080,"quality":23,"preset":"fast","keyframe_interval_s":2}}]}}"#,
            case.hardware
        )
        .as_bytes(),
        &Limits::default(),
    )?;
    let cli_out = output.join("cli.mp4");
    let mut args: Vec<&str> = case.cli_in.clone();
    args.extend(["-i", src.to_str().context("path")?, "-vf", case.vf]);
    args.extend(case.cli_out.iter().copied());
    args.extend(["-g", "60", "-an", cli_out.to_str().context("path")?]);
    let (mut ours_best, mut cli_best) = (f64::MAX, f64::MAX);
    let (mut ours_cpu, mut cli_cpu) = (f64::MAX, f64::MAX);
    let mut stages = String::new();
    for _ in 0..rounds {
        // A job may replace only its own outputs; this one has no id.
        let _ = std::fs::remove_file(output.join("ours.mp4"));
        let (c0, _) = cpu_seconds()?;
        let t = Instant::now();
        let res = case
            .encoder
            .encode_blocking(&spec, &mut |_| {}, &CancellationToken::new())?;
        ours_best = ours_best.min(t.elapsed().as_secs_f64());
        ours_cpu = ours_cpu.min(cpu_seconds()?.0 - c0);
        stages = serde_json::to_string(&res.stages)?;
        let (_, k0) = cpu_seconds()?;
        let t = Instant::now();
        ffmpeg(&args)?;
        cli_best = cli_best.min(t.elapsed().as_secs_f64());
        cli_cpu = cli_cpu.min(cpu_seconds()?.1 - k0);
    }
    let name = case.name;
    let (ours_fps, cli_fps) = (n / ours_best, n / cli_best);
    let per_k = |cpu: f64| 1000.0 * cpu / n;
    println!("{name}: spool's stages {stages}");
    println!("{name}: ffmpeg {}", args.join(" "));
    println!(
        "{name}: in-process {ours_fps:.1} fps, {:.2} CPU s per 1000 frames; ffmpeg CLI {cli_fps:.1} fps, {:.2} CPU s per 1000 frames (best of {rounds})",
        per_k(ours_cpu),
        per_k(cli_cpu)
    );
    println!(
        "spool encode_{name}_fps={ours_fps:.1} cli_fps={cli_fps:.1} ratio={:.3} cpu_per_kframe={:.2} cli_cpu_per_kframe={:.2} cpu_ratio={:.3}",
        ours_fps / cli_fps,
        per_k(ours_cpu),
        per_k(cli_cpu),
        ours_cpu / cli_cpu.max(1e-9)
    );
    Ok(())
}
