//! Run a [`Handler`] on one payload in-process, with no Redis and no
//! runtime around it: the way to unit-test a handler (as apalis'
//! `TestWorker` or tower's `ServiceExt::oneshot` do).
//!
//! ```
//! use spool_worker::testing::TestJob;
//! use spool_worker::{Handler, JobContext, JobError};
//!
//! struct Double;
//!
//! impl Handler for Double {
//!     type Payload = u64;
//!
//!     async fn handle(&self, n: u64, ctx: JobContext) -> Result<Option<serde_json::Value>, JobError> {
//!         ctx.progress(serde_json::json!({"percent": 100}));
//!         Ok(Some(serde_json::json!(n * 2)))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let ran = TestJob::new().run(&Double, serde_json::json!(21)).await;
//! assert_eq!(ran.result.unwrap(), Some(serde_json::json!(42)));
//! assert_eq!(ran.progress, Some(serde_json::json!({"percent": 100})));
//! # }
//! ```
//!
//! What the runtime adds around a handler (decoding the payload, leases,
//! time limits, settling) is the runtime's and tested there; [`TestJob`]
//! decodes the payload the same way and reports what the handler said:
//! its answer, its last progress, its log lines and the time limit it set.
//! A panic in the handler reaches the test (the runtime would retry it).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use spool_queue::LogLine;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::handler::{Children, JobLog};
use crate::{Handler, JobContext, JobError};

/// A job as a handler sees it, without a queue: its id, queue name and
/// attempt are made up (and settable), its cancellation is the test's.
#[derive(Debug)]
pub struct TestJob {
    id: String,
    queue: String,
    attempt: u32,
    max_attempts: u32,
    cancel: CancellationToken,
    children: Option<Arc<Vec<spool_queue::FlowChild>>>,
}

impl Default for TestJob {
    fn default() -> Self {
        TestJob::new()
    }
}

/// What one run of a handler said.
#[derive(Debug)]
#[non_exhaustive]
pub struct TestRun {
    /// The handler's answer; a payload that does not decode is the
    /// permanent error the runtime would dead-letter the job with.
    pub result: Result<Option<serde_json::Value>, JobError>,
    /// The last progress reported, if any.
    pub progress: Option<serde_json::Value>,
    /// Every line logged to the job, in order.
    pub log: Vec<LogLine>,
    /// The time limit the handler set ([`JobContext::set_time_limit`]).
    pub time_limit: Option<Duration>,
}

impl TestJob {
    /// Attempt 1 of 3 of the job `test-job` on the queue `test`.
    pub fn new() -> Self {
        TestJob {
            id: "test-job".into(),
            queue: "test".into(),
            attempt: 1,
            max_attempts: 3,
            cancel: CancellationToken::new(),
            children: None,
        }
    }

    /// This job as a flow's parent whose children left `children`
    /// ([`JobContext::children`] returns them).
    pub fn with_children(mut self, children: Vec<spool_queue::FlowChild>) -> Self {
        self.children = Some(Arc::new(children));
        self
    }

    /// This job with the id `id`.
    pub fn with_id(mut self, id: &str) -> Self {
        self.id = id.into();
        self
    }

    /// This job on the queue `queue`.
    pub fn with_queue(mut self, queue: &str) -> Self {
        self.queue = queue.into();
        self
    }

    /// This job at attempt `attempt` of `max_attempts`.
    pub fn with_attempt(mut self, attempt: u32, max_attempts: u32) -> Self {
        self.attempt = attempt;
        self.max_attempts = max_attempts;
        self
    }

    /// The token that cancels the job: cancel it (before or during
    /// [`TestJob::run`]) to see how the handler stops.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Decodes `payload` as the runtime does and runs `handler` on it.
    pub async fn run<H: Handler>(&self, handler: &H, payload: serde_json::Value) -> TestRun {
        let (progress_tx, progress_rx) = watch::channel(None);
        let (limit_tx, limit_rx) = watch::channel(None);
        let log = Arc::new(JobLog::default());
        let now = SystemTime::now();
        let ctx = JobContext {
            id: self.id.as_str().into(),
            queue: self.queue.as_str().into(),
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            enqueued_at: now,
            reserved_at: now,
            cancel: self.cancel.clone(),
            progress: Arc::new(progress_tx),
            time_limit: Arc::new(limit_tx),
            log: log.clone(),
            children: match &self.children {
                Some(c) => Children::Fixed(c.clone()),
                None => Children::None,
            },
            source: None,
        };
        let result = match serde_json::from_value::<H::Payload>(payload) {
            Err(e) => Err(JobError::permanent(format!(
                "payload is not valid for this worker: {e}"
            ))),
            Ok(p) => handler.handle(p, ctx).await,
        };
        let progress = progress_rx
            .borrow()
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok());
        let time_limit = *limit_rx.borrow();
        TestRun {
            result,
            progress,
            log: log.take(),
            time_limit,
        }
    }
}
