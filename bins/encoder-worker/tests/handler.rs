//! The encode handler run in-process through `spool_worker::testing`: no
//! Redis, no worker process, a real encode of a generated clip.

use anyhow::{Context, Result, ensure};
use spool_encoder::{Encoder, EncoderConfig, Hardware};
use spool_encoder_worker::EncodeHandler;
use spool_worker::JobError;
use spool_worker::testing::TestJob;

struct Roots {
    _dir: tempfile::TempDir,
    input: std::path::PathBuf,
    output: std::path::PathBuf,
}

fn roots() -> Result<Roots> {
    let dir = tempfile::tempdir()?;
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input)?;
    std::fs::create_dir_all(&output)?;
    spool_testkit::lavfi_clip(&input.join("clip.mp4"), 320, 240, 25, 2)?;
    Ok(Roots {
        _dir: dir,
        input,
        output,
    })
}

fn handler(r: &Roots) -> Result<EncodeHandler> {
    Ok(EncodeHandler::new(Encoder::new(EncoderConfig::new(
        &r.input, &r.output,
    ))?))
}

#[tokio::test]
async fn a_spec_encodes_and_reports_progress_result_and_time_limit() -> Result<()> {
    let r = roots()?;
    let h = handler(&r)?;
    let ran = TestJob::new()
        .with_id("job-1")
        .run(
            &h,
            serde_json::json!({
                "input": "clip.mp4", "output": "out/a.mp4", "hardware": "cpu", "timeout_s": 600,
                "renditions": [{"codec": "h264", "height": 120, "preset": "fastest"}]
            }),
        )
        .await;
    let result = ran
        .result
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context("an encode answers its result")?;
    let outputs = result["outputs"].as_array().context("outputs")?;
    ensure!(outputs.len() == 1, "{result}");
    ensure!(outputs[0]["frames"].as_u64() == Some(50), "{result}");
    ensure!(r.output.join("out/a.mp4").is_file());
    ensure!(result["backend"] == "cpu", "{result}");
    let progress = ran.progress.context("the encode reported progress")?;
    ensure!(progress["phase"].is_string(), "{progress}");
    ensure!(
        ran.time_limit == Some(std::time::Duration::from_secs(600)),
        "timeout_s sets the job's time limit: {:?}",
        ran.time_limit
    );
    Ok(())
}

#[tokio::test]
async fn bad_payloads_and_inputs_fail_permanently_and_retries_stay_retryable() -> Result<()> {
    let r = roots()?;
    let h = handler(&r)?;
    let not_a_spec = TestJob::new()
        .run(&h, serde_json::json!({"input": 7}))
        .await;
    ensure!(
        matches!(&not_a_spec.result, Err(JobError::Permanent(m)) if m.contains("not valid")),
        "{:?}",
        not_a_spec.result
    );
    let missing = TestJob::new()
        .run(
            &h,
            serde_json::json!({"input": "nope.mp4", "output": "out/b.mp4",
                "renditions": [{"codec": "h264", "height": 120}]}),
        )
        .await;
    ensure!(
        matches!(&missing.result, Err(JobError::Permanent(m)) if m.contains("nope.mp4")),
        "{:?}",
        missing.result
    );
    // The operator's SPOOL_HW=nvenc overrides the job's "cpu": without
    // NVENC, retryable (another node may have it).
    let forced = h.clone().with_hardware(Some(Hardware::Nvenc));
    if forced.encoder().gpus().reason.is_some() {
        let ran = TestJob::new()
            .run(
                &forced,
                serde_json::json!({"input": "clip.mp4", "output": "out/c.mp4", "hardware": "cpu",
                    "renditions": [{"codec": "h264", "height": 120}]}),
            )
            .await;
        ensure!(
            matches!(&ran.result, Err(JobError::Retryable(m)) if m.contains("NVENC")),
            "{:?}",
            ran.result
        );
        ensure!(!r.output.join("out/c.mp4").exists());
    }
    Ok(())
}

#[tokio::test]
async fn a_cancelled_job_stops_and_leaves_no_output() -> Result<()> {
    let r = roots()?;
    let h = handler(&r)?;
    let job = TestJob::new();
    job.cancellation_token().cancel();
    let ran = job
        .run(
            &h,
            serde_json::json!({"input": "clip.mp4", "output": "out/d.mp4", "hardware": "cpu",
                "renditions": [{"codec": "h264", "height": 120}]}),
        )
        .await;
    ensure!(
        matches!(&ran.result, Err(JobError::Retryable(m)) if m.contains("cancelled")),
        "{:?}",
        ran.result
    );
    ensure!(!r.output.join("out/d.mp4").exists());
    Ok(())
}

/// An encode whose future is dropped (an aborted task) stops its FFmpeg
/// work: the staged output is removed and nothing is published, although
/// nobody cancelled the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_encode_stops_its_ffmpeg_work() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input)?;
    std::fs::create_dir_all(&output)?;
    spool_testkit::lavfi_clip(&input.join("long.mp4"), 640, 360, 25, 30)?;
    let enc = Encoder::new(EncoderConfig::new(&input, &output))?;
    let spec: spool_encoder::EncodeSpec = serde_json::from_value(serde_json::json!({
        "input": "long.mp4", "output": "long-out.mp4", "hardware": "cpu",
        "renditions": [{"codec": "h264", "height": 360, "preset": "slowest"}]
    }))?;
    let cancel = spool_encoder::CancellationToken::new();
    let mut report = |_| {};
    let run = enc.encode(&spec, &mut report, &cancel);
    ensure!(
        tokio::time::timeout(std::time::Duration::from_millis(1500), run)
            .await
            .is_err(),
        "the encode finished before it could be dropped"
    );
    ensure!(!cancel.is_cancelled());
    let staged = || -> Result<bool> {
        Ok(std::fs::read_dir(&output)?.flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".spool-partial-")
        }))
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while staged()? && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    ensure!(
        !staged()?,
        "the FFmpeg work kept running after its future was dropped"
    );
    ensure!(!output.join("long-out.mp4").exists());
    Ok(())
}
