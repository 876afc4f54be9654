//! [`EncodeHandler`]: the encoder as a worker [`Handler`], one encode per
//! job, for `spool-encoder-worker` and for any service that embeds the
//! worker runtime.

use spool_encoder::{EncodeOptions, EncodeSpec, Encoder, Hardware, OutputOwner};
use spool_worker::{Handler, JobContext, JobError, LogLevel};

/// The handler: one encode per job. The payload is an [`EncodeSpec`]; the
/// job's progress, log (FFmpeg's warnings and errors) and time limit (the
/// spec's `timeout_s`) come from the encode; the outputs belong to this
/// enqueue of the job ([`OutputOwner::job`]), so a retry replaces its own
/// earlier outputs and nothing else. Records the `spool_encode_*` metrics.
#[derive(Debug, Clone)]
pub struct EncodeHandler {
    encoder: Encoder,
    /// The worker's `SPOOL_HW` when it overrides the jobs' own choice.
    policy: Option<Hardware>,
}

impl EncodeHandler {
    /// A handler running every job on `encoder`, as each job's spec asks.
    pub fn new(encoder: Encoder) -> Self {
        EncodeHandler {
            encoder,
            policy: None,
        }
    }

    /// This handler with every job's `hardware` replaced by `policy` (the
    /// operator's `SPOOL_HW`); `None` keeps each job's own.
    pub fn with_hardware(mut self, policy: Option<Hardware>) -> Self {
        self.policy = policy;
        self
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }
}

impl Handler for EncodeHandler {
    type Payload = EncodeSpec;

    async fn handle(
        &self,
        mut spec: EncodeSpec,
        ctx: JobContext,
    ) -> Result<Option<serde_json::Value>, JobError> {
        if let Some(hw) = self.policy {
            spec.hardware = hw;
        }
        if let Some(t) = spec.timeout_s {
            ctx.set_time_limit(std::time::Duration::from_secs(t.into()));
        }
        let cancel = ctx.cancellation_token();
        let progress_ctx = ctx.clone();
        // The owner of the outputs: this enqueue of this job, this attempt.
        let owner = OutputOwner::job(
            &ctx.queue,
            ctx.id.as_str(),
            ctx.enqueued_at,
            ctx.reserved_at,
        );
        // FFmpeg's warnings about this encode: into the job's log, and
        // through `tracing` in the job's span.
        let span = tracing::Span::current();
        let log_ctx = ctx.clone();
        let sink: spool_encoder::avlog::Sink = std::sync::Arc::new(move |level, message| {
            let level = match level {
                spool_encoder::avlog::Level::Error => {
                    span.in_scope(|| tracing::error!(target: "ffmpeg", "{message}"));
                    LogLevel::Error
                }
                spool_encoder::avlog::Level::Warning => {
                    span.in_scope(|| tracing::warn!(target: "ffmpeg", "{message}"));
                    LogLevel::Warning
                }
            };
            log_ctx.log_quietly(level, message);
        });
        let opts = EncodeOptions::default()
            .with_owner(owner)
            .with_ffmpeg_log(sink);
        let result = self
            .encoder
            .encode_with(
                &spec,
                &opts,
                &mut |p| {
                    progress_ctx.progress(serde_json::json!({
                        "phase": p.phase,
                        "bytes": p.bytes,
                        "frames": p.frames,
                        "percent": (p.percent * 10.0).round() / 10.0,
                        "fps": (p.fps * 10.0).round() / 10.0,
                    }))
                },
                &cancel,
            )
            .await;
        match result {
            Ok(r) => {
                let frames: u64 = r.outputs.iter().map(|o| o.frames).sum();
                let backend = match r.backend {
                    spool_encoder::Backend::Cpu => "cpu",
                    spool_encoder::Backend::Nvenc { .. } => "nvenc",
                };
                metrics::counter!(spool_encoder::metrics::ENCODE_FRAMES, "backend" => backend)
                    .increment(frames);
                metrics::counter!(spool_encoder::metrics::ENCODES, "backend" => backend)
                    .increment(1);
                metrics::gauge!(spool_encoder::metrics::ENCODE_FPS, "backend" => backend)
                    .set(r.fps);
                tracing::info!(backend, reason = %r.backend_reason, fps = r.fps, "encoded");
                serde_json::to_value(&r)
                    .map(Some)
                    .map_err(|e| JobError::permanent(format!("cannot serialise the result: {e}")))
            }
            Err(e) if e.is_retryable() => Err(JobError::retryable(e.to_string())),
            Err(e) => Err(JobError::permanent(e.to_string())),
        }
    }
}
