//! Every metric the runtime exports, named in one place (the table in docs/operations.md;
//! `docs/operations.md` lists them), and the Prometheus recorder.

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Queue-wide counts by state (`queue`, `state`), read from Redis.
pub const QUEUE_DEPTH: &str = "spool_queue_depth";
/// 1 while the queue is paused (`queue`), read from Redis.
pub const QUEUE_PAUSED: &str = "spool_queue_paused";
/// Jobs this process runs now (`queue`).
pub const ACTIVE_JOBS: &str = "spool_worker_active_jobs";
/// This process's concurrency limit (`queue`).
pub const CAPACITY: &str = "spool_worker_capacity";
/// 1 while draining.
pub const DRAINING: &str = "spool_worker_draining";
/// Finished handlings (`queue`, `outcome`).
pub const JOBS_TOTAL: &str = "spool_jobs_total";
/// Handler time (`queue`, `outcome`).
pub const JOB_DURATION: &str = "spool_job_duration_seconds";
/// Enqueue (or run-at) to start (`queue`).
pub const JOB_WAIT: &str = "spool_job_wait_seconds";
/// How late the oldest due job is (`queue`): seconds since the earliest
/// run-at still waiting in `scheduled`, 0 when nothing due waits. Above a few
/// seconds it means nothing promotes due work (no worker, no promoter).
pub const QUEUE_LATENESS: &str = "spool_queue_lateness_seconds";
/// Handlers still running after their job was settled without them (`queue`):
/// each holds a slot with no job.
pub const LEFTOVER_HANDLERS: &str = "spool_worker_leftover_handlers";
/// Handlers that outlived their job (ignored cancellation past the grace),
/// counted once each (`queue`).
pub const LEFTOVER_HANDLERS_TOTAL: &str = "spool_worker_leftover_handlers_total";

/// How a handling ended: the `outcome` label of `spool_jobs_total` and
/// `spool_job_duration_seconds`, and what the settle logic decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The handler succeeded; the job is completed.
    Completed,
    /// It failed and will run again after a backoff.
    Retried,
    /// It failed for good (permanent error, no attempts left, bad payload).
    Dead,
    /// Handed back unfinished (drain deadline, forced stop), attempt refunded.
    Released,
    /// Another worker owns the job now; nothing was recorded.
    LeaseLost,
    /// Stopped on a cancel request.
    Cancelled,
    /// Stopped at `SPOOL_JOB_TIMEOUT`; dead, or retried with
    /// `SPOOL_JOB_TIMEOUT_RETRY`.
    TimedOut,
    /// Settled on the master, but `SPOOL_REDIS_MIN_REPLICAS` replicas did not
    /// confirm it in time: the settlement happened, a failover now could
    /// undo it (the job would then run again).
    Unreplicated,
}

impl Outcome {
    /// Every outcome, so each counter series exists from the start.
    pub const ALL: [Outcome; 8] = [
        Outcome::Completed,
        Outcome::Retried,
        Outcome::Dead,
        Outcome::Released,
        Outcome::LeaseLost,
        Outcome::Cancelled,
        Outcome::TimedOut,
        Outcome::Unreplicated,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Retried => "retried",
            Outcome::Dead => "dead",
            Outcome::Released => "released",
            Outcome::LeaseLost => "lease_lost",
            Outcome::Cancelled => "cancelled",
            Outcome::TimedOut => "timed_out",
            Outcome::Unreplicated => "unreplicated",
        }
    }
}

/// The metric handles a worker records on every job of one queue, looked
/// up once: `metrics::counter!` and its kin find a series by name and labels
/// on each call (a hash, a key built and its labels copied), a measurable
/// part of a no-op job's cost (docs/performance.md). The recorder must be
/// installed before they are made, as the worker does when it starts.
#[derive(Clone)]
pub(crate) struct JobMetrics {
    queue: Arc<str>,
    /// `spool_job_wait_seconds`.
    pub(crate) wait: metrics::Histogram,
    /// `spool_active_jobs`.
    pub(crate) active: metrics::Gauge,
    /// `spool_jobs_total` and `spool_job_duration_seconds`, by outcome (in
    /// [`Outcome::ALL`]'s order). A duration series is made at its
    /// outcome's first job, as before, so `/metrics` shows no empty
    /// histogram for an outcome that never happened.
    by_outcome: Arc<[(metrics::Counter, OnceLock<metrics::Histogram>)]>,
}

impl JobMetrics {
    /// The handles of `queue`'s series.
    pub(crate) fn new(queue: &str) -> JobMetrics {
        let q = queue.to_owned();
        JobMetrics {
            queue: queue.into(),
            wait: metrics::histogram!(JOB_WAIT, "queue" => q.clone()),
            active: metrics::gauge!(ACTIVE_JOBS, "queue" => q.clone()),
            by_outcome: Outcome::ALL
                .iter()
                .map(|o| {
                    (
                        metrics::counter!(JOBS_TOTAL, "queue" => q.clone(), "outcome" => o.as_str()),
                        OnceLock::new(),
                    )
                })
                .collect(),
        }
    }

    fn index(outcome: Outcome) -> usize {
        Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or_else(|| unreachable!("Outcome::ALL lists every outcome"))
    }

    /// `spool_jobs_total{outcome}`.
    pub(crate) fn jobs(&self, outcome: Outcome) -> &metrics::Counter {
        &self.by_outcome[Self::index(outcome)].0
    }

    /// `spool_job_duration_seconds{outcome}`.
    pub(crate) fn duration(&self, outcome: Outcome) -> &metrics::Histogram {
        self.by_outcome[Self::index(outcome)].1.get_or_init(|| {
            metrics::histogram!(JOB_DURATION, "queue" => self.queue.to_string(), "outcome" => outcome.as_str())
        })
    }
}

/// Buckets for handler time: encodes run from seconds to an hour.
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Buckets for queue wait: from a blocked worker's milliseconds to a backlog's
/// minutes.
const WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle;
/// `None` when another recorder was installed first by the embedding program.
pub(crate) fn prometheus() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(JOB_DURATION.into()), DURATION_BUCKETS)
                .ok()?
                .set_buckets_for_metric(Matcher::Full(JOB_WAIT.into()), WAIT_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

/// The handle, if spool's recorder was installed ([`prometheus`] ran and won).
pub(crate) fn installed() -> Option<PrometheusHandle> {
    HANDLE.get().cloned().flatten()
}

/// The Prometheus text of every metric recorded in this process, as
/// `/metrics` serves it; `None` when spool's recorder is not installed (see
/// `WorkerBuilder::install_metrics_recorder`). For an embedding that serves
/// metrics on its own port.
pub fn render() -> Option<String> {
    installed().map(|h| h.render())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(QUEUE_DEPTH, "Jobs in the queue by state, read from Redis.");
    describe_gauge!(
        QUEUE_PAUSED,
        "1 while the queue is paused (spoolctl pause), read from Redis."
    );
    describe_gauge!(ACTIVE_JOBS, "Jobs this worker process is running now.");
    describe_gauge!(CAPACITY, "Jobs this worker process runs at once at most.");
    describe_gauge!(DRAINING, "1 while the worker drains after SIGTERM.");
    describe_counter!(JOBS_TOTAL, "Finished job handlings by outcome.");
    describe_histogram!(
        JOB_DURATION,
        metrics::Unit::Seconds,
        "Handler time by outcome."
    );
    describe_histogram!(JOB_WAIT, metrics::Unit::Seconds, "Time from due to start.");
    describe_gauge!(
        QUEUE_LATENESS,
        metrics::Unit::Seconds,
        "How late the oldest due job waiting in scheduled is, read from Redis."
    );
    describe_gauge!(
        LEFTOVER_HANDLERS,
        "Handlers still running after their job ended without them (each holds a slot)."
    );
    describe_counter!(
        LEFTOVER_HANDLERS_TOTAL,
        "Handlers that ignored cancellation and outlived their job."
    );
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    #[test]
    fn every_metric_is_in_the_operations_guide() -> Result<(), String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md");
        let doc = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        for name in [
            QUEUE_DEPTH,
            QUEUE_PAUSED,
            ACTIVE_JOBS,
            CAPACITY,
            DRAINING,
            JOBS_TOTAL,
            JOB_DURATION,
            JOB_WAIT,
            QUEUE_LATENESS,
            LEFTOVER_HANDLERS,
            LEFTOVER_HANDLERS_TOTAL,
        ] {
            if !doc.contains(&format!("| `{name}` |")) {
                return Err(format!("{name} has no row in docs/operations.md"));
            }
        }
        Ok(())
    }
}
