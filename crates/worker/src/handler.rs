//! What a media service implements: a [`Handler`] that turns one job's payload
//! into a result, and the [`JobContext`] it gets for progress, cancellation and
//! metadata.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use spool_queue::{LogLevel, LogLine};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A job's work. The runtime decodes the payload (JSON) into `Payload`, calls
/// `handle`, and settles the job from its answer:
///
/// - `Ok(result)`: completed, with `result` stored on the job;
/// - `Err(JobError::Retryable)`: retried after a backoff while attempts remain;
/// - `Err(JobError::Permanent)`: dead at once (bad input, unsupported codec).
///
/// A panic counts as a retryable failure and never takes the process down.
/// Delivery is at-least-once: a job may run again after a crash, so the work
/// must be safe to repeat (write outputs to temporary names, rename at the end).
///
/// # Cancellation and blocking code
///
/// When the job must stop (cancel requested, lease lost, time limit, drain
/// deadline) `ctx.cancelled()` fires and the handler has 250 ms to return.
/// A handler that does not is **not** aborted: its job is settled at once
/// (released, failed or cancelled, so another worker can take it), but its
/// concurrency slot stays taken until its code returns, the worker reports
/// not ready, and `spool_worker_leftover_handlers_total` counts it. So:
///
/// - never block an async handler's thread (it also stalls heartbeats and
///   time limits of other jobs): run blocking work through
///   [`JobContext::run_blocking`], which hands the closure the cancellation
///   token to poll;
/// - check [`JobContext::is_cancelled`] (or select on `ctx.cancelled()`)
///   often enough to stop within the grace.
pub trait Handler: Send + Sync + 'static {
    /// The payload type, decoded from the job's JSON.
    type Payload: DeserializeOwned + Send + 'static;

    /// Runs one job. Watch `ctx.cancelled()`: when it fires, stop promptly and
    /// clean up; the runtime decides what happens to the job.
    fn handle(
        &self,
        payload: Self::Payload,
        ctx: JobContext,
    ) -> impl Future<Output = Result<Option<serde_json::Value>, JobError>> + Send;
}

/// A failed job, as the handler classifies it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    /// Might succeed later (a busy GPU, a flaky download).
    #[error("{0}")]
    Retryable(String),
    /// Will never succeed (corrupt input, impossible settings): no retries.
    #[error("{0}")]
    Permanent(String),
}

impl JobError {
    /// A retryable error.
    pub fn retryable(msg: impl Into<String>) -> Self {
        JobError::Retryable(msg.into())
    }
    /// A permanent error.
    pub fn permanent(msg: impl Into<String>) -> Self {
        JobError::Permanent(msg.into())
    }
}

/// What a handler knows about its job and how it talks back.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job's id.
    pub id: spool_queue::JobId,
    /// The queue.
    pub queue: Arc<str>,
    /// This attempt, from 1.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When the job was enqueued (server clock).
    pub enqueued_at: SystemTime,
    /// When this attempt was reserved (server clock): later for every later
    /// attempt of the job, also after a retry from the dead letters.
    pub reserved_at: SystemTime,
    pub(crate) cancel: CancellationToken,
    pub(crate) progress: Arc<watch::Sender<Option<String>>>,
    pub(crate) time_limit: Arc<watch::Sender<Option<Duration>>>,
    pub(crate) log: Arc<JobLog>,
    pub(crate) children: Children,
    /// The queue the job came from, to enqueue follow-up work into
    /// ([`JobContext::enqueue_flow`]); `None` in a [`crate::testing::TestJob`].
    pub(crate) source: Option<spool_queue::Queue>,
}

/// Where [`JobContext::children`] reads from.
#[derive(Debug, Clone)]
pub(crate) enum Children {
    /// Not a flow's parent: nothing to read.
    None,
    /// A parent of this many children in this queue.
    Queue(spool_queue::Queue, u32),
    /// Given by a test ([`crate::testing::TestJob::with_children`]).
    Fixed(Arc<Vec<spool_queue::FlowChild>>),
}

/// Log lines a handling has not yet sent to Redis. The runtime sends them
/// about once a second and before the job settles; between two sends at most
/// [`spool_queue::MAX_LOG_LINES`] − 1 wait, the oldest dropped past that and
/// counted in a line sent first, so a handler logging in a loop cannot grow
/// the worker's memory and the log says what it lost.
#[derive(Debug, Default)]
pub(crate) struct JobLog {
    pending: std::sync::Mutex<(std::collections::VecDeque<LogLine>, u64)>,
}

impl JobLog {
    fn push(&self, line: LogLine) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.0.len() >= spool_queue::MAX_LOG_LINES - 1 {
            p.0.pop_front();
            p.1 += 1;
        }
        p.0.push_back(line);
    }

    /// Takes what waits, with a line saying how many were dropped first.
    pub(crate) fn take(&self) -> Vec<LogLine> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(p.0.len() + 1);
        if p.1 > 0 {
            out.push(LogLine::now(
                LogLevel::Warning,
                &format!("{} log lines dropped: logged faster than sent", p.1),
            ));
            p.1 = 0;
        }
        out.extend(p.0.drain(..));
        out
    }
}

impl JobContext {
    /// Reports progress; the latest value reaches the job's `progress` field
    /// with the next heartbeat (at most about once a second), so calling this
    /// for every frame costs nothing.
    pub fn progress(&self, value: serde_json::Value) {
        self.progress.send_replace(Some(value.to_string()));
    }

    /// Sets this handling's time limit from what the payload asks (the
    /// encode spec's `timeout_s`), counted from the job's start. It replaces
    /// the worker's `SPOOL_JOB_TIMEOUT`, is ignored when the job has a
    /// `timeout` option of its own (the producer's word wins), and is capped
    /// by `SPOOL_MAX_JOB_TIMEOUT`. Past it, the job is cancelled as for
    /// `SPOOL_JOB_TIMEOUT`.
    pub fn set_time_limit(&self, limit: Duration) {
        self.time_limit.send_replace(Some(limit));
    }

    /// Appends a line to the job's log (`spoolctl inspect <id> --log`, the
    /// console), kept in Redis with the job: the latest 200 lines, each cut
    /// to 1,000 bytes, gone when the job's retention ends. It is also logged
    /// through `tracing` in the job's span. Cheap: lines are sent in batches
    /// about once a second and before the job settles. Callable from any
    /// thread (clone the context into a blocking task).
    pub fn log(&self, level: LogLevel, message: impl std::fmt::Display) {
        let message = message.to_string();
        match level {
            LogLevel::Info => tracing::info!(target: "spool::job_log", "{message}"),
            LogLevel::Warning => tracing::warn!(target: "spool::job_log", "{message}"),
            LogLevel::Error => tracing::error!(target: "spool::job_log", "{message}"),
        }
        self.log.push(LogLine::now(level, &message));
    }

    /// Appends a line to the job's log without logging it through `tracing`
    /// (for lines the caller has logged already, like FFmpeg's).
    pub fn log_quietly(&self, level: LogLevel, message: &str) {
        self.log.push(LogLine::now(level, message));
    }

    /// How many children the job has, when it is a flow's parent
    /// ([`spool_queue::Flow`]); 0 otherwise.
    pub fn child_count(&self) -> usize {
        match &self.children {
            Children::None => 0,
            Children::Queue(_, n) => *n as usize,
            Children::Fixed(v) => v.len(),
        }
    }

    /// The children of a flow's parent, in document order, with their
    /// results (completed) and errors (died or cancelled; only under
    /// [`spool_queue::ChildFailure::Continue`] does a parent run with any).
    /// They are kept until this job ends, whatever the children's own
    /// retention. Empty, without a call to Redis, for a job without
    /// children. A Redis error is retryable.
    pub async fn children(&self) -> Result<Vec<spool_queue::FlowChild>, JobError> {
        match &self.children {
            Children::None => Ok(Vec::new()),
            Children::Queue(queue, _) => queue
                .children(&self.id)
                .await
                .map_err(|e| JobError::retryable(format!("cannot read the job's children: {e}"))),
            Children::Fixed(v) => Ok(v.to_vec()),
        }
    }

    /// Enqueues `flow` into the job's own queue (follow-up work the job
    /// planned: a chunked encode's chunks and join), as
    /// [`spool_queue::Queue::enqueue_flow`] does: all of it or nothing, and
    /// idempotent by the root's id, so a retried attempt that enqueues the
    /// same flow gets the same ids. A Redis error is retryable; a flow the
    /// queue refuses is permanent.
    pub async fn enqueue_flow(
        &self,
        flow: &spool_queue::Flow,
    ) -> Result<Vec<spool_queue::JobId>, JobError> {
        let Some(queue) = &self.source else {
            return Err(JobError::permanent(
                "this job has no queue to enqueue into (a TestJob)",
            ));
        };
        queue.enqueue_flow(flow).await.map_err(|e| {
            if e.is_transient() {
                JobError::retryable(format!("cannot enqueue the flow: {e}"))
            } else {
                JobError::permanent(format!("the flow was refused: {e}"))
            }
        })
    }

    /// Fires when the job must stop: a cancel was requested, the lease was
    /// lost, the worker's drain deadline passed, or the time limit did.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// Whether the job must stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The token itself, to hand to code that takes a `CancellationToken`.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Runs blocking code (FFmpeg, a render, file I/O) on tokio's blocking
    /// pool and waits for it, the blessed way to block inside a handler.
    /// `work` gets the job's cancellation token: poll
    /// [`CancellationToken::is_cancelled`] between units of work and return
    /// early when it is set. Until `work` returns, the handler has not
    /// returned, so the job's slot stays taken however long it runs (see
    /// [`Handler`]). A panic in `work` becomes a retryable error.
    pub async fn run_blocking<T, F>(&self, work: F) -> Result<T, JobError>
    where
        F: FnOnce(CancellationToken) -> T + Send + 'static,
        T: Send + 'static,
    {
        let token = self.cancel.clone();
        tokio::task::spawn_blocking(move || work(token))
            .await
            .map_err(|e| JobError::retryable(format!("blocking work panicked: {e}")))
    }
}
