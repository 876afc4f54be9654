//! Encode speed: the in-process pipeline against the `ffmpeg` CLI with
//! identical settings, in the same run, on a generated 1080p clip.
//!
//! `cargo bench -p spool-benches --bench encode`. Settings:
//! `SPOOL_BENCH_SECONDS` (clip length, default 10), `SPOOL_BENCH_ROUNDS` (3;
//! the best round of each side counts, which filters out noise from other
//! work on a shared machine). With an NVENC GPU, NVENC is measured too.
//! Target (issue 4): in-process fps / CLI fps at least 0.97.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use spool_benches::setting;
use spool_encoder::{CancellationToken, EncodeSpec, Encoder, EncoderConfig, Limits};

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
    let encoder = Encoder::new(EncoderConfig::new(&input, &output))?;
    let mut backends = vec![("cpu", "libx264", "veryfast")];
    if encoder.gpus().reason.is_none() {
        backends.push(("nvenc", "h264_nvenc", "p3"));
    }
    println!(
        "clip: 1920x1080, {n} frames; settings: h264, preset fast (x264 veryfast / nvenc p3), quality 23, gop 60, no audio"
    );
    for (hw, cli_encoder, cli_preset) in backends {
        let spec = EncodeSpec::from_json(
            format!(
                r#"{{"input":"src.mp4","output":"ours.mp4","hardware":"{hw}","audio":{{"mode":"none"}},
                   "renditions":[{{"codec":"h264","height":1080,"quality":23,"preset":"fast","keyframe_interval_s":2}}]}}"#
            )
            .as_bytes(),
            &Limits::default(),
        )?;
        let quality_flag = if hw == "cpu" { "-crf" } else { "-cq" };
        let cli_out = output.join("cli.mp4");
        let (mut ours_best, mut cli_best) = (f64::MAX, f64::MAX);
        for _ in 0..rounds {
            let t = Instant::now();
            encoder.encode(&spec, &mut |_| {}, &CancellationToken::new())?;
            ours_best = ours_best.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let mut args = vec![
                "-i",
                src.to_str().context("path")?,
                "-vf",
                "scale=1920:1080,format=yuv420p",
                "-c:v",
                cli_encoder,
                "-preset",
                cli_preset,
                quality_flag,
                "23",
                "-g",
                "60",
                "-an",
            ];
            if hw == "nvenc" {
                args.extend(["-rc", "vbr"]);
            }
            args.push(cli_out.to_str().context("path")?);
            ffmpeg(&args)?;
            cli_best = cli_best.min(t.elapsed().as_secs_f64());
        }
        let (ours_fps, cli_fps) = (n / ours_best, n / cli_best);
        println!(
            "{hw}: in-process {ours_fps:.1} fps, ffmpeg CLI {cli_fps:.1} fps (best of {rounds})"
        );
        println!(
            "spool encode_{hw}_fps={ours_fps:.1} cli_fps={cli_fps:.1} ratio={:.3}",
            ours_fps / cli_fps
        );
    }
    Ok(())
}
