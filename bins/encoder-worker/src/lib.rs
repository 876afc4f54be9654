//! `spool-encoder-worker`: the worker runtime with the encoder as its
//! handler, as a library a media service can embed and as the container's
//! binary (whose `main` only parses the flags and calls [`run`]).
//!
//! - [`EncodeHandler`]: the encoder as a [`spool_worker::Handler`], for a
//!   service that builds its own [`spool_worker::Worker`];
//! - [`Args`] and [`settings`]: every setting as flags and `SPOOL_*`
//!   variables (flags win), checked at start-up (a bad value exits 2
//!   naming the setting), logged with the Redis password masked;
//! - [`run`]: the whole worker process, as `spool-encoder-worker` runs it.
//!
//! See `docs/operations.md` for the settings and `docs/encode-jobs.md` for
//! the payload.

use std::process::ExitCode;
use std::time::Duration;

use spool_encoder::Encoder;
use spool_worker::{LogFormat, Worker};

mod handler;
mod settings;
mod stderr;

pub use handler::EncodeHandler;
pub use settings::{Args, BadSetting, DEFAULT_JOB_TIMEOUT, MIN_PROBE_SIZE, settings};

/// How often GPU telemetry is sampled into the `spool_gpu_*` gauges.
const GPU_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// `--gpu-report`: prints discovery, a live sample and the session probe
/// per GPU ([`spool_encoder::gpu::report`]) as JSON.
pub fn gpu_report(cap: usize) -> ExitCode {
    println!(
        "{}",
        serde_json::to_string_pretty(&spool_encoder::gpu::report(cap)).unwrap_or_default()
    );
    ExitCode::SUCCESS
}

/// How long the exit waits for encode threads still running once the
/// worker has settled every job (a storage request in flight, an encode
/// between two cancel checks): they are left behind, not waited for, so the
/// process keeps its shutdown bound whatever FFmpeg or the storage does.
pub const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the worker process `args` describes until it drains (SIGTERM) or
/// fails: the exit code is 2 for a bad setting, 1 for any other failure.
/// Must run on a multi-thread tokio runtime; see [`EXIT_WAIT`] for how the
/// caller should shut it down.
pub async fn run(args: Args) -> ExitCode {
    if args.gpu_report {
        return gpu_report(args.nvenc_sessions);
    }
    let (mut worker_cfg, enc_cfg, policy) = match settings(&args) {
        Ok(s) => s,
        Err(e) => {
            let msg = e.to_string();
            eprintln!("spool-encoder-worker: {msg}");
            return ExitCode::from(2);
        }
    };
    // What encoder libraries print to stderr goes through the logger.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match stderr::capture() {
        Some(original) => spool_worker::init_logging_to(worker_cfg.log_format, original, ansi),
        None => spool_worker::init_logging(worker_cfg.log_format),
    }
    let encoder = match Encoder::new(enc_cfg) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the encoder");
            return ExitCode::from(1);
        }
    };
    if args.worker.get("SPOOL_CONCURRENCY").is_none() {
        worker_cfg.concurrency = encoder.default_concurrency();
    }
    tracing::info!(
        redis = %spool_queue::mask_password(&worker_cfg.redis_url),
        queue = %worker_cfg.queue,
        concurrency = worker_cfg.concurrency,
        lease = ?worker_cfg.lease,
        drain_timeout = ?worker_cfg.drain_timeout,
        metrics_addr = ?worker_cfg.metrics_addr,
        input_root = %encoder.config().input_root.display(),
        output_root = %encoder.config().output_root.display(),
        hw = %args.hw,
        allow_http = encoder.config().allow_http,
        s3_buckets = %args.s3_buckets,
        s3_endpoint = ?encoder.config().storage.endpoint,
        scratch_dir = %encoder.config().scratch_dir.display(),
        nvenc_gpus = encoder.gpus().nvenc_gpus().count(),
        json_logs = worker_cfg.log_format == LogFormat::Json,
        "effective configuration"
    );
    tokio::spawn(async {
        loop {
            spool_encoder::gpu::export_metrics();
            tokio::time::sleep(GPU_SAMPLE_EVERY).await;
        }
    });
    // The worker registry shows each GPU, what it does now, and why there is
    // none (spoolctl workers, the console).
    let gpus = encoder.gpus().gpus.clone();
    let no_gpu = encoder.gpus().reason.clone();
    let info = move || {
        serde_json::json!({
            "gpus": gpus,
            "gpu_samples": spool_encoder::gpu::sample(),
            "no_gpu_reason": no_gpu,
        })
    };
    let handler = EncodeHandler::new(encoder).with_hardware(policy);
    let worker = match Worker::builder(handler)
        .config(worker_cfg)
        .worker_info(info)
        .build()
    {
        Ok(w) => w,
        Err(e) => {
            eprintln!("spool-encoder-worker: {e}");
            return ExitCode::from(2);
        }
    };
    match worker.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            ExitCode::from(if e.is_bad_setting() { 2 } else { 1 })
        }
    }
}
