//! Running one leased job: decode, call the handler, heartbeat while it runs,
//! and settle it from what happened. One task per job; the run loop only
//! starts them.
//!
//! A slot is a slot: the job's task (and with it its concurrency permit and
//! its entry among the running jobs) ends only when the handler's code has
//! returned. A handler that ignores cancellation past [`STOP_GRACE`] is not
//! aborted (aborting a future frees nothing its blocking code holds, and a
//! GPU would then run more encodes than `SPOOL_CONCURRENCY` allows): its job
//! is settled at once, so another worker can take it, and the task waits for
//! the handler, counted as a leftover and keeping the worker not ready.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use spool_queue::{JobState, Queue, ReservedJob, Settle};

use crate::beater::{BeatFailure, Beater, next_tick};
use crate::settler::{SettleFailure, Settler};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::WorkerConfig;
use crate::handler::{Children, Handler, JobContext, JobError, JobLog};
use crate::health::Health;
use crate::metrics::{self as m, JobMetrics, Outcome};

/// How often progress reaches Redis at most: a few updates a second would be
/// noise for a watcher and load for Redis.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How long a stopped handler may take to return by itself (to clean up its
/// temporary files) before its task is dropped.
const STOP_GRACE: Duration = Duration::from_millis(250);
/// Longest pause between attempts to settle while Redis is unreachable.
const SETTLE_RETRY_MAX: Duration = Duration::from_secs(2);

/// Why the runtime stopped a handler before it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// The drain deadline passed (or a forced stop): release the job.
    Drain,
    /// Someone cancelled the job: record it cancelled.
    CancelRequested,
    /// Another worker holds the job now: touch nothing.
    LeaseLost,
    /// The handling ran past its time limit.
    TimedOut(TimeLimit),
}

/// The time limit one handling runs under, and where it came from (named in
/// the job's error, so an operator knows which setting to change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeLimit {
    pub(crate) limit: Duration,
    pub(crate) source: &'static str,
}

impl TimeLimit {
    /// The limit for `job`: its own `timeout` option, else what the handler
    /// set from the payload, else `SPOOL_JOB_TIMEOUT`; any of them capped by
    /// `SPOOL_MAX_JOB_TIMEOUT`, which alone applies when none is set.
    pub(crate) fn choose(
        config: &WorkerConfig,
        job: &ReservedJob,
        from_handler: Option<Duration>,
    ) -> Option<TimeLimit> {
        let asked = job
            .timeout
            .map(|limit| (limit, "the job's timeout option"))
            .or(from_handler.map(|limit| (limit, "the limit its payload set")))
            .or(config.job_timeout.map(|limit| (limit, "SPOOL_JOB_TIMEOUT")));
        let chosen = match (asked, config.max_job_timeout) {
            (Some((limit, _)), Some(max)) if limit > max => (max, "SPOOL_MAX_JOB_TIMEOUT"),
            (Some(asked), _) => asked,
            (None, Some(max)) => (max, "SPOOL_MAX_JOB_TIMEOUT"),
            (None, None) => return None,
        };
        Some(TimeLimit {
            limit: chosen.0,
            source: chosen.1,
        })
    }
}

/// The handler's own task, still running after it was told to stop.
type Leftover = tokio::task::JoinHandle<Result<Option<serde_json::Value>, JobError>>;

/// How the handler's run ended.
enum Ended {
    Returned(Result<Option<serde_json::Value>, JobError>),
    Panicked(String),
    Stopped,
}

/// Shared by every job task of one runtime.
pub(crate) struct JobEnv<H> {
    pub(crate) handler: Arc<H>,
    pub(crate) queue: Queue,
    pub(crate) config: Arc<WorkerConfig>,
    /// Fired at the drain deadline or on a forced stop.
    pub(crate) release_all: CancellationToken,
    /// Ids of the jobs running or settling now: their number is the
    /// active-jobs gauge, and they are logged when a shutdown has to leave
    /// before their results reached Redis.
    pub(crate) running: Arc<std::sync::Mutex<IdCounts>>,
    /// Batches settlements into shared script calls.
    pub(crate) settler: Settler,
    /// Batches the beats of jobs due at once into shared script calls.
    pub(crate) beater: Beater,
    /// Readiness: not ready while a leftover handler holds a slot.
    pub(crate) health: Arc<Health>,
    /// Ids of the jobs among `running` that are settled already and wait only
    /// for a handler that ignored its stop (nothing of theirs is unsettled).
    pub(crate) leftovers: Arc<std::sync::Mutex<IdCounts>>,
    /// The per-job metric handles of this queue, looked up once.
    pub(crate) metrics: JobMetrics,
}

impl<H> Clone for JobEnv<H> {
    fn clone(&self) -> Self {
        JobEnv {
            handler: self.handler.clone(),
            queue: self.queue.clone(),
            config: self.config.clone(),
            release_all: self.release_all.clone(),
            running: self.running.clone(),
            settler: self.settler.clone(),
            beater: self.beater.clone(),
            health: self.health.clone(),
            leftovers: self.leftovers.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<H> JobEnv<H> {
    /// Records a job starting (`true`) or ending; returns how many run now.
    /// (A job reclaimed from this worker and reserved by it again runs twice
    /// for a moment: ids are counted, not just listed.)
    fn track(&self, id: &str, starts: bool) -> usize {
        count_id(&self.running, id, starts)
    }

    /// Ids of the jobs running whose results have not reached Redis yet.
    pub(crate) fn unsettled(&self) -> Vec<String> {
        let leftovers = self.leftovers.lock().unwrap_or_else(|p| p.into_inner());
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .ids
            .iter()
            .filter(|(id, n)| leftovers.ids.get(*id).copied().unwrap_or(0) < **n)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How many jobs run now.
    pub(crate) fn running_count(&self) -> usize {
        self.running.lock().map_or(0, |ids| ids.total)
    }
}

/// Job ids with how many times each is counted, and the sum of the counts
/// (kept, not summed on each change: a worker runs hundreds of jobs).
#[derive(Debug, Default)]
pub(crate) struct IdCounts {
    /// Each id's count (never 0: an id whose count falls to 0 is removed).
    pub(crate) ids: std::collections::HashMap<String, usize>,
    /// The sum of `ids`' counts.
    pub(crate) total: usize,
}

/// Adds (`true`) or removes one count of `id`; returns the total count.
fn count_id(ids: &std::sync::Mutex<IdCounts>, id: &str, add: bool) -> usize {
    let mut c = ids.lock().unwrap_or_else(|p| p.into_inner());
    if add {
        *c.ids.entry(id.to_owned()).or_default() += 1;
        c.total += 1;
    } else if let Some(n) = c.ids.get_mut(id) {
        *n -= 1;
        if *n == 0 {
            c.ids.remove(id);
        }
        c.total -= 1;
    }
    c.total
}

/// Runs one job to its end and settles it.
pub(crate) async fn execute<H: Handler>(env: JobEnv<H>, job: ReservedJob) {
    let span = tracing::info_span!(
        "job",
        queue = %env.queue.name(),
        job_id = %job.id,
        attempt = job.attempt
    );
    run(env, job).instrument(span).await
}

async fn run<H: Handler>(env: JobEnv<H>, job: ReservedJob) {
    let queue_label = env.queue.name();
    let wait = SystemTime::now()
        .duration_since(job.run_at)
        .unwrap_or_default();
    env.metrics.wait.record(wait.as_secs_f64());
    if job.lease_expired_before_start() {
        // Reserved, then stalled (every runtime thread blocked, the process
        // stopped) past the lease: a sweep may have handed the job to another
        // worker already. Running it here could run it twice at once; the
        // lease's owner, or the next sweep, settles it.
        tracing::warn!(
            lease_ms = job.lease.as_millis() as u64,
            "not starting: the lease ran out between reserve and start (was this process stalled?)"
        );
        env.metrics.jobs(Outcome::LeaseLost).increment(1);
        return;
    }
    let running = env.track(&job.id, true);
    env.metrics.active.set(running as f64);
    tracing::info!(wait_ms = wait.as_millis() as u64, "job started");

    let started = Instant::now();
    let mut leftover: Option<Leftover> = None;
    let (outcome, settle) = match serde_json::from_slice::<H::Payload>(&job.payload) {
        Err(e) => {
            let why = format!("payload is not valid for this worker: {e}");
            tracing::warn!(error = %why, "refusing job");
            (Outcome::Dead, Some(Settle::Dead(why)))
        }
        Ok(payload) => {
            let log = Arc::new(JobLog::default());
            let (ended, reason, unsent, left) = supervise(&env, &job, payload, &log).await;
            leftover = left;
            // What the handler logged last is stored before the job settles.
            send_log(&env, &job, &log).await;
            // Progress the handler reported after the last beat (a short job's
            // final 100 %) is stored before the job leaves `active`.
            if let (Some(p), None) = (unsent, reason)
                && let Err(e) = env.beater.beat(&job, Some(&p)).await
            {
                tracing::debug!(error = ?e, "final progress not stored");
            }
            decide(
                ended,
                reason,
                job.timeout_retry.unwrap_or(env.config.job_timeout_retry),
            )
        }
    };
    let handler_time = started.elapsed();

    let outcome = match settle {
        None => outcome,
        Some(how) => settle_with_retry(&env, &job, how, outcome)
            .await
            .unwrap_or(Outcome::LeaseLost),
    };
    env.metrics.jobs(outcome).increment(1);
    env.metrics
        .duration(outcome)
        .record(handler_time.as_secs_f64());
    tracing::info!(
        outcome = outcome.as_str(),
        duration_ms = handler_time.as_millis() as u64,
        "job finished"
    );
    if let Some(task) = leftover {
        count_id(&env.leftovers, &job.id, true);
        wait_for_leftover(&env, queue_label, task).await;
        count_id(&env.leftovers, &job.id, false);
    }
    let left = env.track(&job.id, false);
    env.metrics.active.set(left as f64);
}

/// Holds the job's slot until a handler that ignored its stop returns: the
/// job is settled already, but the handler's code still runs (and may hold a
/// GPU session, memory, a thread). Logged once, counted, and the worker is
/// not ready meanwhile.
async fn wait_for_leftover<H>(env: &JobEnv<H>, queue_label: &str, task: Leftover) {
    let since = Instant::now();
    let n = env.health.set_leftover(true);
    metrics::counter!(m::LEFTOVER_HANDLERS_TOTAL, "queue" => queue_label.to_owned()).increment(1);
    metrics::gauge!(m::LEFTOVER_HANDLERS, "queue" => queue_label.to_owned()).set(n as f64);
    tracing::warn!(
        grace_ms = STOP_GRACE.as_millis() as u64,
        "the handler ignored cancellation and still runs after its job ended; its slot stays taken (and the worker not ready) until it returns: check it with JobContext::is_cancelled, or run blocking code through JobContext::run_blocking"
    );
    let _ = task.await;
    let n = env.health.set_leftover(false);
    metrics::gauge!(m::LEFTOVER_HANDLERS, "queue" => queue_label.to_owned()).set(n as f64);
    tracing::info!(
        after_ms = since.elapsed().as_millis() as u64,
        "the leftover handler returned; its slot is free"
    );
}

/// Calls the handler in its own task (so a panic stays there) and heartbeats
/// until it returns or must stop.
async fn supervise<H: Handler>(
    env: &JobEnv<H>,
    job: &ReservedJob,
    payload: H::Payload,
    log: &Arc<JobLog>,
) -> (Ended, Option<StopReason>, Option<String>, Option<Leftover>) {
    let cancel = CancellationToken::new();
    let (progress_tx, mut progress_rx) = watch::channel(None::<String>);
    let (limit_tx, mut limit_rx) = watch::channel(None::<Duration>);
    let ctx = JobContext {
        id: job.id.clone(),
        queue: env.queue.name().into(),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        enqueued_at: job.enqueued_at,
        reserved_at: job.deadline.checked_sub(job.lease).unwrap_or(job.deadline),
        cancel: cancel.clone(),
        progress: Arc::new(progress_tx),
        time_limit: Arc::new(limit_tx),
        log: log.clone(),
        children: match job.children {
            0 => Children::None,
            n => Children::Queue(env.queue.clone(), n),
        },
        source: Some(env.queue.clone()),
    };
    let handler = env.handler.clone();
    // In the job's span, so what the handler logs is attributed to it.
    let mut task =
        tokio::spawn(async move { handler.handle(payload, ctx).await }.in_current_span());

    let reason: OnceLock<StopReason> = OnceLock::new();
    let stop = |why: StopReason| {
        if reason.set(why).is_ok() {
            tracing::info!(reason = ?why, "stopping handler");
        }
        cancel.cancel();
    };
    let period = env.config.heartbeat_for(job.lease);
    // On the process's shared grid (beater.rs), so the beats of a worker's
    // jobs coincide and go to Redis in one call.
    let mut beat = tokio::time::interval_at(next_tick(period), period);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The time limit, chosen again when the handler sets one.
    let started = tokio::time::Instant::now();
    let mut limit = TimeLimit::choose(&env.config, job, None);
    let mut progress_tick =
        tokio::time::interval_at(next_tick(PROGRESS_INTERVAL), PROGRESS_INTERVAL);
    progress_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // The progress last sent to Redis.
    let mut sent: Option<String> = None;
    let joined = loop {
        tokio::select! {
            res = &mut task => break Some(res),
            _ = env.release_all.cancelled(), if reason.get().is_none() => stop(StopReason::Drain),
            _ = until(limit.map(|l| started + l.limit)), if reason.get().is_none() => {
                if let Some(l) = limit {
                    stop(StopReason::TimedOut(l));
                }
            }
            Ok(()) = limit_rx.changed() => {
                limit = TimeLimit::choose(&env.config, job, *limit_rx.borrow_and_update());
                tracing::debug!(?limit, "time limit set by the handler");
            }
            _ = cancel.cancelled() => break None,
            _ = beat.tick() => {
                sent = progress_rx.borrow_and_update().clone();
                heartbeat(env, job, sent.as_deref(), &stop).await;
            }
            _ = progress_tick.tick() => {
                if progress_rx.has_changed().unwrap_or(false) {
                    sent = progress_rx.borrow_and_update().clone();
                    heartbeat(env, job, sent.as_deref(), &stop).await;
                }
                send_log(env, job, log).await;
            }
        }
    };
    let mut leftover = None;
    let joined = match joined {
        Some(res) => Some(res),
        // Stopped: give the handler a moment to return by itself and clean
        // up. One that does not is left running, never aborted (see the
        // module docs): the caller settles the job and then waits for it.
        None => match tokio::time::timeout(STOP_GRACE, &mut task).await {
            Ok(res) => Some(res),
            Err(_) => {
                leftover = Some(task);
                None
            }
        },
    };
    let ended = match joined {
        None => Ended::Stopped,
        Some(Ok(r)) => Ended::Returned(r),
        Some(Err(e)) if e.is_panic() => Ended::Panicked(panic_message(e.into_panic())),
        Some(Err(_)) => Ended::Stopped,
    };
    let latest = progress_rx.borrow().clone();
    let unsent = if latest != sent { latest } else { None };
    (ended, reason.get().copied(), unsent, leftover)
}

/// Sends the log lines that wait; a failure (Redis away or full) drops them
/// with a warning: a log is never worth holding a job up.
async fn send_log<H>(env: &JobEnv<H>, job: &ReservedJob, log: &JobLog) {
    let lines = log.take();
    if lines.is_empty() {
        return;
    }
    if let Err(e) = env.queue.append_log(&job.id, &lines).await {
        tracing::warn!(error = %e, lines = lines.len(), "job log lines not stored");
    }
}

/// Sleeps until `deadline`; never wakes without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn heartbeat<H>(
    env: &JobEnv<H>,
    job: &ReservedJob,
    progress: Option<&str>,
    stop: &impl Fn(StopReason),
) {
    match env.beater.beat(job, progress).await {
        Ok(hb) if hb.cancel_requested => stop(StopReason::CancelRequested),
        Ok(_) => {}
        Err(BeatFailure::LeaseLost) => {
            tracing::warn!("lease lost: another worker owns this job now");
            stop(StopReason::LeaseLost)
        }
        Err(BeatFailure::Failed(e)) => {
            tracing::warn!(error = %e, "heartbeat failed; retrying at the next beat")
        }
    }
}

/// Turns how the handler ended into a metric outcome and what to tell Redis.
fn decide(
    ended: Ended,
    reason: Option<StopReason>,
    timeout_retry: bool,
) -> (Outcome, Option<Settle>) {
    let fail = |error: String, permanent: bool| {
        if permanent {
            Settle::Dead(error)
        } else {
            Settle::Retry(error)
        }
    };
    match (ended, reason) {
        // Another worker owns the job: whatever happened here is not ours to report.
        (_, Some(StopReason::LeaseLost)) => (Outcome::LeaseLost, None),
        // Work that finished is kept, whatever else stopped it meanwhile.
        (Ended::Returned(Ok(v)), _) => {
            let bytes = v.map(|v| v.to_string().into_bytes()).unwrap_or_default();
            (Outcome::Completed, Some(Settle::Complete(bytes)))
        }
        (_, Some(StopReason::Drain)) => (Outcome::Released, Some(Settle::Release)),
        (_, Some(StopReason::TimedOut(TimeLimit { limit, source }))) => {
            let why = format!(
                "timed out after {limit:?} ({source}); {}",
                if timeout_retry {
                    "retried (timeout_retry)"
                } else {
                    "not retried: a job that timed out once will likely time out again"
                }
            );
            (Outcome::TimedOut, Some(fail(why, !timeout_retry)))
        }
        (_, Some(StopReason::CancelRequested)) => (Outcome::Cancelled, Some(Settle::Cancelled)),
        (Ended::Returned(Err(JobError::Permanent(e))), None) => {
            (Outcome::Dead, Some(fail(e, true)))
        }
        (Ended::Returned(Err(JobError::Retryable(e))), None) => {
            (Outcome::Retried, Some(fail(e, false)))
        }
        (Ended::Panicked(msg), None) => (
            Outcome::Retried,
            Some(fail(format!("handler panicked: {msg}"), false)),
        ),
        (Ended::Stopped, None) => (Outcome::Released, Some(Settle::Release)),
    }
}

/// Settles, retrying while Redis is unreachable (settling is idempotent), until
/// the lease would have run out anyway. Returns the outcome to count (`planned`,
/// except that a retry with no attempts left counts as dead), or `None` when
/// the lease was lost.
async fn settle_with_retry<H>(
    env: &JobEnv<H>,
    job: &ReservedJob,
    how: Settle,
    planned: Outcome,
) -> Option<Outcome> {
    let give_up = Instant::now() + job.lease.max(env.config.lease.unwrap_or_default());
    let mut pause = Duration::from_millis(100);
    loop {
        match env.settler.settle(job, how.clone()).await {
            // A retry with no attempts left ended dead.
            Ok(state) if planned == Outcome::Retried && state != JobState::Scheduled => {
                return Some(Outcome::Dead);
            }
            Ok(_) => return Some(planned),
            Err(SettleFailure::LeaseLost) => {
                tracing::warn!("lease lost before the job could be settled");
                return None;
            }
            Err(SettleFailure::Unreplicated { state, error }) => {
                tracing::warn!(
                    state = %state,
                    error = %error,
                    "settled, but its replication was not confirmed: the job is {state} on the master; a failover now could undo that and run it again"
                );
                return Some(Outcome::Unreplicated);
            }
            Err(SettleFailure::Transient(e)) if Instant::now() < give_up => {
                tracing::warn!(error = %e, "cannot settle yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(SETTLE_RETRY_MAX);
            }
            Err(SettleFailure::Transient(e)) => {
                tracing::error!(error = %e, "giving up settling: the lease will expire and the job rerun");
                return None;
            }
        }
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_counts_keep_their_total_as_ids_come_and_go() {
        let ids = std::sync::Mutex::new(IdCounts::default());
        assert_eq!(count_id(&ids, "a", true), 1);
        // A job reclaimed and reserved again by the same worker: twice.
        assert_eq!(count_id(&ids, "a", true), 2);
        assert_eq!(count_id(&ids, "b", true), 3);
        assert_eq!(count_id(&ids, "a", false), 2);
        assert_eq!(
            count_id(&ids, "nobody", false),
            2,
            "an unknown id changes nothing"
        );
        assert_eq!(count_id(&ids, "a", false), 1);
        let c = ids.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!((c.total, c.ids.len(), c.ids.get("b")), (1, 1, Some(&1)));
    }

    fn kind(s: &Option<Settle>) -> &'static str {
        match s {
            None => "none",
            Some(Settle::Complete(_)) => "complete",
            Some(Settle::Retry(_)) => "retry",
            Some(Settle::Dead(_)) => "dead",
            Some(Settle::Release) => "release",
            Some(Settle::Cancelled) => "cancelled",
            Some(_) => "other",
        }
    }

    fn ok() -> Ended {
        Ended::Returned(Ok(Some(serde_json::json!({"out": 1}))))
    }

    const LIMIT: StopReason = StopReason::TimedOut(TimeLimit {
        limit: Duration::from_secs(5),
        source: "SPOOL_JOB_TIMEOUT",
    });

    /// Every way a handling can end, against every reason the runtime had
    /// to stop it: what is counted and how the job is settled.
    #[test]
    fn decide_covers_every_ending_and_stop_reason() {
        let retryable = || Ended::Returned(Err(JobError::retryable("busy")));
        let permanent = || Ended::Returned(Err(JobError::permanent("corrupt")));
        let cases: Vec<(Ended, Option<StopReason>, bool, Outcome, &str)> = vec![
            (ok(), None, false, Outcome::Completed, "complete"),
            (retryable(), None, false, Outcome::Retried, "retry"),
            (permanent(), None, false, Outcome::Dead, "dead"),
            (
                Ended::Panicked("boom".into()),
                None,
                false,
                Outcome::Retried,
                "retry",
            ),
            (Ended::Stopped, None, false, Outcome::Released, "release"),
            // A lost lease touches nothing, even a finished result.
            (
                ok(),
                Some(StopReason::LeaseLost),
                false,
                Outcome::LeaseLost,
                "none",
            ),
            (
                permanent(),
                Some(StopReason::LeaseLost),
                false,
                Outcome::LeaseLost,
                "none",
            ),
            // Finished work is kept whatever else stopped it meanwhile.
            (
                ok(),
                Some(StopReason::Drain),
                false,
                Outcome::Completed,
                "complete",
            ),
            (
                ok(),
                Some(StopReason::CancelRequested),
                false,
                Outcome::Completed,
                "complete",
            ),
            (ok(), Some(LIMIT), false, Outcome::Completed, "complete"),
            (
                retryable(),
                Some(StopReason::Drain),
                false,
                Outcome::Released,
                "release",
            ),
            (
                Ended::Stopped,
                Some(StopReason::Drain),
                false,
                Outcome::Released,
                "release",
            ),
            (
                Ended::Stopped,
                Some(StopReason::CancelRequested),
                false,
                Outcome::Cancelled,
                "cancelled",
            ),
            (
                Ended::Stopped,
                Some(LIMIT),
                false,
                Outcome::TimedOut,
                "dead",
            ),
            (
                Ended::Stopped,
                Some(LIMIT),
                true,
                Outcome::TimedOut,
                "retry",
            ),
        ];
        for (i, (ended, reason, timeout_retry, outcome, settle)) in cases.into_iter().enumerate() {
            let (o, s) = decide(ended, reason, timeout_retry);
            assert_eq!((o, kind(&s)), (outcome, settle), "case {i}");
        }
    }

    #[test]
    fn decide_keeps_the_result_and_names_the_time_limit() {
        let (_, s) = decide(ok(), None, false);
        assert!(matches!(s, Some(Settle::Complete(b)) if b == br#"{"out":1}"#));
        let (_, s) = decide(Ended::Returned(Ok(None)), None, false);
        assert!(matches!(s, Some(Settle::Complete(b)) if b.is_empty()));
        let (_, s) = decide(Ended::Stopped, Some(LIMIT), false);
        assert!(
            matches!(&s, Some(Settle::Dead(e)) if e.contains("5s") && e.contains("SPOOL_JOB_TIMEOUT") && e.contains("not retried")),
            "{s:?}"
        );
        let (_, s) = decide(Ended::Panicked("boom".into()), None, false);
        assert!(
            matches!(&s, Some(Settle::Retry(e)) if e.contains("panicked: boom")),
            "{s:?}"
        );
    }
}
