//! What a media service implements: a [`Handler`] that turns one job's payload
//! into a result, and the [`JobContext`] it gets for progress, cancellation and
//! metadata.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
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
    pub(crate) cancel: CancellationToken,
    pub(crate) progress: Arc<watch::Sender<Option<String>>>,
    pub(crate) time_limit: Arc<watch::Sender<Option<Duration>>>,
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
}
