//! Group commit for settlements (`batch.rs`): the settlements that queued up
//! while the previous call was in flight go in a single script call.

use spool_queue::{Error as QueueError, JobState, Queue, ReservedJob, Settle};

use crate::batch::Batcher;

/// Most settlements in one call; bounds how long one script holds Redis.
const MAX_BATCH: usize = 256;

/// Why a settlement did not take.
#[derive(Debug)]
pub(crate) enum SettleFailure {
    /// The lease is gone: another worker owns the job, or it no longer exists.
    LeaseLost,
    /// Redis did not answer; retrying is safe (settling is idempotent).
    Transient(String),
    /// Redis applied the settlement (the job is in `state` now) but fewer
    /// replicas than `SPOOL_REDIS_MIN_REPLICAS` confirmed it in time. Not
    /// worth retrying: a second settle finds the lease already spent.
    Unreplicated { state: JobState, error: String },
}

type Answer = Result<JobState, SettleFailure>;

/// The handle job tasks settle through.
#[derive(Clone)]
pub(crate) struct Settler(Batcher<(ReservedJob, Settle), Answer>);

impl Settler {
    /// Starts the batcher task for `queue`; it ends when every handle is dropped.
    pub(crate) fn start(queue: Queue) -> Self {
        Settler(Batcher::start(MAX_BATCH, false, move |batch| {
            let queue = queue.clone();
            async move { settle_batch(&queue, batch).await }
        }))
    }

    /// Settles one job, batched with whatever else is waiting.
    pub(crate) async fn settle(&self, job: &ReservedJob, how: Settle) -> Answer {
        self.0
            .call((job.without_payload(), how))
            .await
            .unwrap_or_else(|| {
                Err(SettleFailure::Transient(
                    "the settle batcher stopped".into(),
                ))
            })
    }
}

async fn settle_batch(queue: &Queue, batch: Vec<(ReservedJob, Settle)>) -> Vec<Answer> {
    let items = batch.iter().map(|(job, how)| (job, how.clone())).collect();
    match queue.settle_many_applied(items).await {
        Ok((results, replicated)) => {
            let unconfirmed = replicated.err().map(|e| e.to_string());
            results
                .into_iter()
                .map(|r| match (r, &unconfirmed) {
                    (Ok(state), None) => Ok(state),
                    (Ok(state), Some(error)) => Err(SettleFailure::Unreplicated {
                        state,
                        error: error.clone(),
                    }),
                    (Err(QueueError::LeaseLost { .. } | QueueError::NotFound { .. }), _) => {
                        Err(SettleFailure::LeaseLost)
                    }
                    (Err(other), _) => Err(SettleFailure::Transient(other.to_string())),
                })
                .collect()
        }
        Err(e) => {
            let msg = e.to_string();
            batch
                .iter()
                .map(|_| Err(SettleFailure::Transient(msg.clone())))
                .collect()
        }
    }
}
