//! Batched heartbeats (`batch.rs`): every beat that is waiting goes in one
//! heartbeat call. A beat's Redis cost is mostly the request itself
//! (docs/performance.md), so a worker with many jobs pays it once per tick
//! instead of once per job.
//!
//! Beats coincide because every job of a worker beats on the same grid
//! ([`next_tick`]): jobs with the same period tick at the same instants,
//! and the batcher, woken by the first, lets the others arrive before it
//! sends. When a single job beats, nothing waits: the beat goes at once.

use std::sync::OnceLock;
use std::time::Duration;

use spool_queue::{Error as QueueError, Heartbeat, Queue, ReservedJob};
use tokio::time::Instant;

use crate::batch::Batcher;

/// Most beats in one call; bounds how long one script holds Redis.
const MAX_BATCH: usize = 256;

/// Why a beat did not take.
#[derive(Debug)]
pub(crate) enum BeatFailure {
    /// The lease is gone: another worker owns the job, or it no longer exists.
    LeaseLost,
    /// Redis did not answer, or answered with an error; the next beat retries.
    Failed(String),
}

type Answer = Result<Heartbeat, BeatFailure>;

/// The handle job tasks beat through.
#[derive(Clone)]
pub(crate) struct Beater(Batcher<(ReservedJob, Option<String>), Answer>);

impl Beater {
    /// Starts the batcher task for `queue`, extending each lease by `extend`
    /// (or by the job's own lease); it ends when every handle is dropped.
    pub(crate) fn start(queue: Queue, extend: Option<Duration>) -> Self {
        Beater(Batcher::start(MAX_BATCH, true, move |batch| {
            let queue = queue.clone();
            async move { beat_batch(&queue, extend, batch).await }
        }))
    }

    /// Beats one job, with its progress when given, batched with the beats
    /// of the worker's other jobs that are due now.
    pub(crate) async fn beat(&self, job: &ReservedJob, progress: Option<&str>) -> Answer {
        self.0
            .call((job.without_payload(), progress.map(str::to_owned)))
            .await
            .unwrap_or_else(|| Err(BeatFailure::Failed("the heartbeat batcher stopped".into())))
    }
}

async fn beat_batch(
    queue: &Queue,
    extend: Option<Duration>,
    batch: Vec<(ReservedJob, Option<String>)>,
) -> Vec<Answer> {
    let items: Vec<(&ReservedJob, Option<&str>)> = batch
        .iter()
        .map(|(job, progress)| (job, progress.as_deref()))
        .collect();
    match queue.heartbeat_many(&items, extend).await {
        Ok(results) => results
            .into_iter()
            .map(|r| match r {
                Ok(hb) => Ok(hb),
                Err(QueueError::LeaseLost { .. } | QueueError::NotFound { .. }) => {
                    Err(BeatFailure::LeaseLost)
                }
                Err(other) => Err(BeatFailure::Failed(other.to_string())),
            })
            .collect(),
        Err(e) => {
            let msg = e.to_string();
            batch
                .iter()
                .map(|_| Err(BeatFailure::Failed(msg.clone())))
                .collect()
        }
    }
}

/// The first tick of a beat timer with this `period`: the next instant
/// after now on a grid of that period shared by the whole process, so that
/// every job with the same period beats at the same instants. It comes at
/// most one period from now (a job's first beat may come sooner than a
/// period after its start, never later).
pub(crate) fn next_tick(period: Duration) -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let now = Instant::now();
    let epoch = *EPOCH.get_or_init(|| now);
    let period_ns = period.as_nanos().max(1);
    match now.checked_duration_since(epoch) {
        Some(since) => {
            let into = since.as_nanos() % period_ns;
            let wait = period_ns - into;
            now + Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX))
        }
        // A clock that runs from elsewhere (a test runtime's paused time):
        // no shared grid to keep, so one period from now.
        None => now + period,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_with_one_period_tick_together() {
        let period = Duration::from_millis(200);
        let before = Instant::now();
        let a = next_tick(period);
        assert!(a > before && a <= Instant::now() + period);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let b = next_tick(period);
        assert!(
            b <= Instant::now() + period,
            "the first tick comes within a period"
        );
        // Both land on the same grid: a whole number of periods apart.
        let apart = b.max(a) - b.min(a);
        assert!(
            apart.as_nanos().is_multiple_of(period.as_nanos()),
            "{apart:?} is not a multiple of {period:?}"
        );
    }
}
