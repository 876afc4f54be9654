//! Jobs as producers describe them ([`JobOptions`]), as consumers hold them
//! ([`ReservedJob`]) and as operators inspect them ([`JobInfo`]).
//!
//! Over 400 lines because the options' bounds, the job states and the
//! decoding of a stored job hash belong together, with their tests.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::JobId;

/// Lowest and highest priority; higher runs first.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;
/// Default lease: long enough for a few missed heartbeats (the worker beats at a
/// third of it), short enough that a killed pod's job restarts within a minute.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Default attempts, counting the first.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default first retry delay bound; doubled per attempt.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// Default bound on any retry delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Default retention of completed and cancelled jobs: a day, long enough for a
/// producer to read the result, short enough to bound memory.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Shortest lease accepted: heartbeats need room to arrive.
const MIN_LEASE: Duration = Duration::from_millis(100);
/// The bounds the scripts enforce (lib.lua; docs/protocol.md lists them):
/// a day for a lease or a backoff, 366 days for a delay or a retention.
pub const MAX_LEASE: Duration = Duration::from_secs(86_400);
/// Longest backoff delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(86_400);
/// Longest delay before a job runs.
pub const MAX_DELAY: Duration = Duration::from_secs(366 * 86_400);
/// Longest retention of a finished job.
pub const MAX_RETENTION: Duration = Duration::from_secs(366 * 86_400);
/// Most attempts a job may have.
pub const MAX_ATTEMPTS: u32 = 10_000;
/// Longest time limit a job may ask for (the worker's
/// `SPOOL_MAX_JOB_TIMEOUT` may bound it further).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(31 * 86_400);
/// Longest dedup key accepted.
const MAX_DEDUP_KEY: usize = 256;

/// How to run one job. Every field has a default; see the constants.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// Higher runs first, within [`PRIORITY_RANGE`]; FIFO within a priority.
    pub priority: i32,
    /// Not before this much time from now (`None`: at once).
    pub delay: Option<Duration>,
    /// Attempts allowed, counting the first; the job dies after the last.
    pub max_attempts: u32,
    /// Bound of the first retry delay (exponential backoff, full jitter).
    pub backoff: Duration,
    /// Bound of every retry delay.
    pub backoff_max: Duration,
    /// How long a lease lasts without a heartbeat.
    pub lease: Duration,
    /// How long a completed or cancelled job is kept (zero: deleted at once).
    pub retention: Duration,
    /// While a job with this key is live (not completed, dead or cancelled), a
    /// second enqueue with it returns the first job's id.
    pub dedup_key: Option<String>,
    /// Use this id instead of a generated one; enqueueing an existing id is a
    /// no-op that returns it, which makes enqueue safe to retry.
    pub id: Option<String>,
    /// Longest a handling of this job may run before the worker cancels it
    /// and fails the job "timed out after …" (`None`: the worker's
    /// `SPOOL_JOB_TIMEOUT`, or the handler's own limit). Bounded by the
    /// worker's `SPOOL_MAX_JOB_TIMEOUT` and by [`MAX_TIMEOUT`].
    pub timeout: Option<Duration>,
    /// Whether a timed-out attempt is retried (`Some(true)`) or the job dies
    /// (`Some(false)`); `None`: the worker's `SPOOL_JOB_TIMEOUT_RETRY`
    /// (default: dies, as a job that timed out once will likely again).
    pub timeout_retry: Option<bool>,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            priority: 0,
            delay: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: DEFAULT_BACKOFF,
            backoff_max: DEFAULT_BACKOFF_MAX,
            lease: DEFAULT_LEASE,
            retention: DEFAULT_RETENTION,
            dedup_key: None,
            id: None,
            timeout: None,
            timeout_retry: None,
        }
    }
}

impl JobOptions {
    /// Sets the priority.
    pub fn priority(mut self, p: i32) -> Self {
        self.priority = p;
        self
    }
    /// Delays the job by `d`.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }
    /// Runs the job at `t` (at once if `t` is past).
    pub fn run_at(mut self, t: SystemTime) -> Self {
        self.delay = t.duration_since(SystemTime::now()).ok();
        self
    }
    /// Sets the attempts allowed.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }
    /// Sets the backoff bounds.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = first;
        self.backoff_max = max;
        self
    }
    /// Sets the lease duration.
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }
    /// Sets the retention of the finished job.
    pub fn retention(mut self, d: Duration) -> Self {
        self.retention = d;
        self
    }
    /// Sets the dedup key.
    pub fn dedup_key(mut self, k: impl Into<String>) -> Self {
        self.dedup_key = Some(k.into());
        self
    }
    /// Sets the job id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the job's time limit.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
    /// Sets whether a timed-out attempt is retried.
    pub fn timeout_retry(mut self, retry: bool) -> Self {
        self.timeout_retry = Some(retry);
        self
    }

    /// Checks every option, naming the first one out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(Error::InvalidOption { field, reason });
        if !PRIORITY_RANGE.contains(&self.priority) {
            return bad(
                "priority",
                format!("{} is outside -1000..=1000", self.priority),
            );
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return bad("max_attempts", format!("must be within 1..={MAX_ATTEMPTS}"));
        }
        if self.lease < MIN_LEASE {
            return bad("lease", format!("{:?} is shorter than 100ms", self.lease));
        }
        for (field, v, max) in [
            ("lease", self.lease, MAX_LEASE),
            ("backoff_max", self.backoff_max, MAX_BACKOFF),
            ("retention", self.retention, MAX_RETENTION),
            ("delay", self.delay.unwrap_or_default(), MAX_DELAY),
            ("timeout", self.timeout.unwrap_or_default(), MAX_TIMEOUT),
        ] {
            if v > max {
                return bad(field, format!("{v:?} is longer than the maximum {max:?}"));
            }
        }
        if self.timeout.is_some_and(|t| t < Duration::from_millis(1)) {
            return bad("timeout", "must be at least 1ms".into());
        }
        if self.backoff > self.backoff_max {
            return bad("backoff", "the first delay exceeds backoff_max".into());
        }
        if let Some(k) = &self.dedup_key
            && (k.is_empty() || k.len() > MAX_DEDUP_KEY)
        {
            return bad("dedup_key", "must be 1 to 256 bytes".into());
        }
        if let Some(id) = &self.id
            && (id.is_empty() || id.len() > MAX_DEDUP_KEY || id.contains(char::is_whitespace))
        {
            return bad("id", "must be 1 to 256 bytes without whitespace".into());
        }
        Ok(())
    }
}

/// A job to enqueue in a batch: its payload and options.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Opaque bytes; the worker runtime reads them as JSON.
    pub payload: Vec<u8>,
    /// How to run it.
    pub options: JobOptions,
}

impl NewJob {
    /// A job with default options.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        NewJob {
            payload: payload.into(),
            options: JobOptions::default(),
        }
    }

    /// A job with the given options.
    pub fn with_options(payload: impl Into<Vec<u8>>, options: JobOptions) -> Self {
        NewJob {
            payload: payload.into(),
            options,
        }
    }
}

/// Where a job is in its life (see the diagram in `docs/protocol.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its run-at time or for a retry.
    Scheduled,
    /// In the backlog.
    Ready,
    /// Leased to a consumer.
    Active,
    /// Finished successfully.
    Completed,
    /// Failed for good: permanent error, or out of attempts.
    Dead,
    /// Cancelled before or while running.
    Cancelled,
    /// A flow's parent waiting for its children to end (not reservable,
    /// not outstanding work).
    Waiting,
}

impl JobState {
    /// The name used in Redis and in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Ready => "ready",
            JobState::Active => "active",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
            JobState::Waiting => "waiting",
        }
    }

    /// Whether the job has ended and will not run again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Dead | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "scheduled" => JobState::Scheduled,
            "ready" => JobState::Ready,
            "active" => JobState::Active,
            "completed" => JobState::Completed,
            "dead" => JobState::Dead,
            "cancelled" => JobState::Cancelled,
            "waiting" => JobState::Waiting,
            other => return Err(format!("unknown job state {other:?}")),
        })
    }
}

/// A job leased to this consumer. Settle it with `complete`, `fail`,
/// `release` or `ack_cancelled`, and heartbeat it while it runs.
#[derive(Debug, Clone)]
pub struct ReservedJob {
    /// The job's id.
    pub id: JobId,
    /// The bytes the producer enqueued.
    pub payload: Vec<u8>,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The lease duration heartbeats extend by.
    pub lease: Duration,
    /// When it was enqueued (server clock).
    pub enqueued_at: SystemTime,
    /// When it became due (server clock): enqueue time, or its run-at.
    pub run_at: SystemTime,
    /// Its priority.
    pub priority: i32,
    /// Retry backoff bounds.
    pub backoff: Duration,
    /// Bound of every retry delay.
    pub backoff_max: Duration,
    /// The lease token that fences this consumer's writes.
    pub(crate) token: String,
    /// When the lease runs out unless extended (server clock).
    pub deadline: SystemTime,
    /// The job's own time limit ([`JobOptions::timeout`]).
    pub timeout: Option<Duration>,
    /// The job's own choice on retrying a timeout ([`JobOptions::timeout_retry`]).
    pub timeout_retry: Option<bool>,
    /// How many children it has, when it is a flow's parent (0 otherwise):
    /// [`crate::Queue::children`] reads what they left.
    pub children: u32,
    /// When the reserve's reply was read (this process's monotonic clock):
    /// with `lease`, a deadline no server or local wall clock can skew.
    pub(crate) reserved_at: std::time::Instant,
}

impl ReservedJob {
    /// Whether the lease taken at reserve has run out by this process's
    /// monotonic clock, counting no heartbeat. A worker stalled between
    /// reserve and start (every thread blocked, a stopped process) must not
    /// start a handler then: the sweep may already have handed the job to
    /// another worker. Counted from when the reply was read, so it errs late
    /// by one network trip; use it before the first heartbeat only.
    pub fn lease_expired_before_start(&self) -> bool {
        self.reserved_at.elapsed() >= self.lease
    }

    /// The lease token (for logs and protocol-level tooling).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A copy of this lease without its payload: all that a heartbeat or a
    /// settlement reads (the id, the token, the options), for code that
    /// hands the lease to another task (a batcher) and need not copy a large
    /// payload each time.
    pub fn without_payload(&self) -> ReservedJob {
        ReservedJob {
            id: self.id.clone(),
            payload: Vec::new(),
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            lease: self.lease,
            enqueued_at: self.enqueued_at,
            run_at: self.run_at,
            priority: self.priority,
            backoff: self.backoff,
            backoff_max: self.backoff_max,
            token: self.token.clone(),
            deadline: self.deadline,
            timeout: self.timeout,
            timeout_retry: self.timeout_retry,
            children: self.children,
            reserved_at: self.reserved_at,
        }
    }
}

/// Everything stored about a job, for operators and `spoolctl inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    /// The job's id.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Where it is.
    pub state: JobState,
    /// Attempts so far (counted at reserve).
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Priority.
    pub priority: i32,
    /// The payload, as text when it is UTF-8 (else lossy).
    pub payload: String,
    /// The last progress a worker reported (JSON when the worker sent JSON).
    pub progress: Option<serde_json::Value>,
    /// The result of a completed job (JSON when the worker sent JSON).
    pub result: Option<serde_json::Value>,
    /// The last error: a failure's message, or why a lease expired.
    pub last_error: Option<String>,
    /// Enqueue time, ms since the Unix epoch.
    pub enqueued_at_ms: Option<u64>,
    /// Due time, ms since the Unix epoch.
    pub run_at_ms: Option<u64>,
    /// Start of the latest attempt, ms since the Unix epoch.
    pub started_at_ms: Option<u64>,
    /// End time, ms since the Unix epoch.
    pub finished_at_ms: Option<u64>,
    /// Whether a cancel was requested while it ran.
    pub cancel_requested: bool,
    /// Its dedup key.
    pub dedup_key: Option<String>,
    /// Its own time limit in ms ([`JobOptions::timeout`]).
    pub timeout_ms: Option<u64>,
    /// Its own choice on retrying a timeout ([`JobOptions::timeout_retry`]).
    pub timeout_retry: Option<bool>,
    /// Its failed attempts, oldest first (the last 20; each error cut at
    /// 2,000 bytes). The latest attempt, when it did not fail, is
    /// `started_at_ms`..`finished_at_ms`.
    pub failures: Vec<Failure>,
    /// The flow parent this job is a child of ([`crate::Flow`]).
    pub parent: Option<JobId>,
    /// The parent's queue, when it is not this job's.
    pub parent_queue: Option<String>,
    /// How many children this job has, when it is a flow's parent
    /// ([`crate::Queue::children`] lists them).
    pub child_count: Option<u32>,
    /// A parent's policy for a child that dies or is cancelled.
    pub on_child_failure: Option<crate::ChildFailure>,
    /// The child whose failure ended this parent (policy `fail`).
    pub failed_by: Option<JobId>,
}

/// One failed attempt of a job, as [`JobInfo::failures`] lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Which attempt (1 for the first).
    pub attempt: u32,
    /// When the attempt started, ms since the Unix epoch (0 if unknown).
    pub started_at_ms: u64,
    /// When it failed (the worker's report or the lease's expiry).
    pub at_ms: u64,
    /// Why.
    pub error: String,
}

impl JobInfo {
    /// Builds the info from a job hash's fields (as `HGETALL` returns them),
    /// refusing hashes spool did not write with [`Error::Corrupt`].
    pub(crate) fn from_hash(key: &str, queue: &str, h: HashMap<String, Vec<u8>>) -> Result<Self> {
        let text = |f: &str| h.get(f).map(|v| String::from_utf8_lossy(v).into_owned());
        let corrupt = |reason: String| Error::Corrupt {
            key: key.to_owned(),
            reason,
        };
        let num = |f: &str| -> Result<Option<i64>> {
            match text(f).filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(s) => s
                    .parse::<f64>()
                    .map(|v| Some(v as i64))
                    .map_err(|_| corrupt(format!("field {f} is {s:?}, not a number"))),
            }
        };
        let state = text("state")
            .ok_or_else(|| corrupt("the job hash has no state field".into()))?
            .parse::<JobState>()
            .map_err(corrupt)?;
        let json_or_text = |f: &str| {
            h.get(f).filter(|v| !v.is_empty()).map(|v| {
                serde_json::from_slice(v).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(v).into_owned())
                })
            })
        };
        let ms = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
        Ok(JobInfo {
            id: JobId::from(
                text("id").unwrap_or_else(|| key.rsplit(':').next().unwrap_or("").to_owned()),
            ),
            queue: text("queue").unwrap_or_else(|| queue.to_owned()),
            state,
            attempts: num("attempts")?.unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
            max_attempts: num("max_attempts")?.unwrap_or(1).clamp(0, u32::MAX as i64) as u32,
            priority: num("priority")?.unwrap_or(0).clamp(-1000, 1000) as i32,
            payload: text("payload").unwrap_or_default(),
            progress: json_or_text("progress"),
            result: json_or_text("result"),
            last_error: text("last_error").filter(|s| !s.is_empty()),
            enqueued_at_ms: ms(num("enqueued_at")?),
            run_at_ms: ms(num("run_at")?),
            started_at_ms: ms(num("started_at")?),
            finished_at_ms: ms(num("finished_at")?),
            cancel_requested: text("cancel").as_deref() == Some("1"),
            dedup_key: text("dedup").filter(|s| !s.is_empty()),
            timeout_ms: ms(num("timeout_ms")?).filter(|&t| t > 0),
            timeout_retry: match text("timeout_retry").as_deref() {
                Some("1") => Some(true),
                Some("0") => Some(false),
                _ => None,
            },
            parent: text("parent").filter(|s| !s.is_empty()).map(JobId::from),
            parent_queue: text("parent_queue").filter(|s| !s.is_empty()),
            child_count: num("kids")?.map(|n| n.clamp(0, u32::MAX as i64) as u32),
            on_child_failure: match text("on_child_failure").as_deref() {
                Some("continue") => Some(crate::ChildFailure::Continue),
                Some("fail") => Some(crate::ChildFailure::Fail),
                _ => None,
            },
            failed_by: text("failed_by").filter(|s| !s.is_empty()).map(JobId::from),
            // Advisory history: a damaged field reads as none, never fails
            // the job's page.
            failures: h
                .get("failures")
                .and_then(|v| serde_json::from_slice(v).ok())
                .unwrap_or_default(),
        })
    }
}

/// Converts server milliseconds to a `SystemTime`.
pub(crate) fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_out_of_range_name_the_field() {
        let cases = [
            (JobOptions::default().priority(5000), "priority"),
            (JobOptions::default().max_attempts(0), "max_attempts"),
            (
                JobOptions::default().lease(Duration::from_millis(1)),
                "lease",
            ),
            (JobOptions::default().dedup_key(""), "dedup_key"),
            (JobOptions::default().id("has space"), "id"),
            (
                JobOptions::default().timeout(Duration::from_secs(32 * 86_400)),
                "timeout",
            ),
            (JobOptions::default().timeout(Duration::ZERO), "timeout"),
        ];
        for (opts, want) in cases {
            match opts.validate() {
                Err(Error::InvalidOption { field, .. }) => assert_eq!(field, want),
                other => panic!("{want}: {other:?}"),
            }
        }
        assert!(JobOptions::default().validate().is_ok());
    }

    #[test]
    fn hash_without_state_is_corrupt() {
        let h = HashMap::from([("payload".to_owned(), b"{}".to_vec())]);
        let err = JobInfo::from_hash("spool:{q}:job:x", "q", h).err();
        assert!(matches!(err, Some(Error::Corrupt { .. })), "{err:?}");
    }
}
