//! [`EncodeHandler`]: the encoder as a worker [`Handler`], one encode per
//! job, for `spool-encoder-worker` and for any service that embeds the
//! worker runtime.

use spool_encoder::{EncodeOptions, EncodeSpec, Encoder, Hardware, OutputOwner, Part};
use spool_queue::{ChildFailure, Flow, JobOptions, JobState, NewJob};
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
        if spec.is_chunked() {
            return self.plan(spec, &ctx).await;
        }
        let Some(Part::Join { dir, .. }) = &spec.part else {
            return self.encode(spec, &ctx).await;
        };
        // The join: every chunk must have completed. The flow runs its
        // join whatever happened to the chunks (`ChildFailure::Continue`),
        // so that it removes them after a failure as after a success.
        let dir = dir.clone();
        let failed: Vec<String> = ctx
            .children()
            .await?
            .into_iter()
            .filter(|c| c.state != Some(JobState::Completed) && c.result.is_none())
            .map(|c| {
                format!(
                    "{} ({})",
                    c.id,
                    c.error.unwrap_or_else(|| "not completed".into())
                )
            })
            .collect();
        if !failed.is_empty() {
            self.remove_chunks(&dir).await;
            return Err(JobError::permanent(format!(
                "{} part(s) of this chunked encode failed, so nothing was joined: {}",
                failed.len(),
                failed.join("; ")
            )));
        }
        let last = ctx.attempt >= ctx.max_attempts;
        let r = self.encode(spec, &ctx).await;
        // The chunks go once the outputs are published, or once no attempt
        // of the join is left to use them.
        if r.is_ok() || last || matches!(r, Err(JobError::Permanent(_))) {
            self.remove_chunks(&dir).await;
        }
        r
    }
}

impl EncodeHandler {
    /// Removes a join's chunk files; a failure is logged, not the job's.
    async fn remove_chunks(&self, dir: &str) {
        if let Err(e) = self.encoder.remove_chunks(dir).await {
            tracing::warn!(dir, error = %e, "cannot remove the chunks of a chunked encode");
        }
    }

    /// The planning step of a chunked encode: reads the input's keyframe
    /// index, enqueues a flow of one job per chunk under a join, and
    /// completes with where that join is. An input with one chunk's worth
    /// of keyframes is encoded here, in one pass.
    async fn plan(
        &self,
        mut spec: EncodeSpec,
        ctx: &JobContext,
    ) -> Result<Option<serde_json::Value>, JobError> {
        let started = std::time::Instant::now();
        let plan = self
            .encoder
            .plan_chunks(&spec, &ctx.cancellation_token())
            .await
            .map_err(job_error)?;
        if plan.starts.len() < 2 {
            ctx.log(
                LogLevel::Info,
                format!(
                    "one chunk's worth ({:.1} s, {} keyframes): encoded in one pass",
                    plan.duration_s(),
                    plan.keyframes
                ),
            );
            spec.chunking = None;
            return self.encode(spec, ctx).await;
        }
        // The same names for every attempt of this enqueue of the job, so a
        // retried plan finds the flow it enqueued (enqueue_flow is
        // idempotent by the root's id).
        let enqueued_ms = ctx
            .enqueued_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let key = format!("{}@{enqueued_ms}", ctx.id);
        let dir = spool_encoder::chunks::chunk_dir(&spec.output, &key);
        let base = if ctx.id.len() > 200 {
            dir.rsplit('/').next().unwrap_or(&dir).to_owned()
        } else {
            ctx.id.to_string()
        };
        let jobs = plan.jobs(&spec, &dir);
        let (chunks, join) = (&jobs.chunks, &jobs.join);
        let json = |s: &EncodeSpec| {
            serde_json::to_vec(s)
                .map_err(|e| JobError::permanent(format!("cannot write a spec: {e}")))
        };
        let join_id = format!("{base}.join");
        let mut flow = Flow::new(NewJob::with_options(
            json(join)?,
            JobOptions::default().id(join_id.clone()),
        ))
        .on_child_failure(ChildFailure::Continue);
        // The audio first: it is the longest single part, so it starts
        // while the chunks spread over the other workers.
        if let Some(a) = &jobs.audio {
            flow = flow.child(Flow::new(NewJob::with_options(
                json(a)?,
                JobOptions::default().id(format!("{base}.audio")),
            )));
        }
        for (i, c) in chunks.iter().enumerate() {
            flow = flow.child(Flow::new(NewJob::with_options(
                json(c)?,
                JobOptions::default().id(format!("{base}.c{i:05}")),
            )));
        }
        ctx.enqueue_flow(&flow).await?;
        let tb = f64::from(plan.time_base[0]) / f64::from(plan.time_base[1]);
        let starts_s: Vec<f64> = plan
            .starts
            .iter()
            .map(|s| (*s as f64 * tb * 1000.0).round() / 1000.0)
            .collect();
        let plan_s = started.elapsed().as_secs_f64();
        ctx.log(
            LogLevel::Info,
            format!(
                "planned {} chunks of {:.1} s from {} keyframes in {plan_s:.2} s; the outputs come from job {join_id}",
                chunks.len(),
                plan.duration_s(),
                plan.keyframes
            ),
        );
        Ok(Some(serde_json::json!({
            "chunked": {
                "join": join_id,
                "chunks": chunks.len(),
                "audio": jobs.audio.as_ref().map(|_| format!("{base}.audio")),
                "starts_s": starts_s,
                "duration_s": plan.duration_s(),
                "keyframes": plan.keyframes,
                "plan_s": plan_s,
            }
        })))
    }

    /// One encode (a whole spec, a chunk or a join) for this job.
    async fn encode(
        &self,
        spec: EncodeSpec,
        ctx: &JobContext,
    ) -> Result<Option<serde_json::Value>, JobError> {
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
            Err(e) => Err(job_error(e)),
        }
    }
}

/// An encode's error as the job's: retryable or permanent as the encoder
/// says.
fn job_error(e: spool_encoder::EncodeError) -> JobError {
    if e.is_retryable() {
        JobError::retryable(e.to_string())
    } else {
        JobError::permanent(e.to_string())
    }
}
