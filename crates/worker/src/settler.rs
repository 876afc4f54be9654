//! Group commit for settlements: job tasks hand their outcome to one batcher
//! task, which settles everything that queued up while its previous call was
//! in flight in a single script call. Under load this turns a round trip and a
//! script call per job into one per batch; when idle it adds nothing (a lone
//! settlement goes out at once).

use spool_queue::{Error as QueueError, JobState, Queue, ReservedJob, Settle};
use tokio::sync::{mpsc, oneshot};

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

type Request = (
    ReservedJob,
    Settle,
    oneshot::Sender<Result<JobState, SettleFailure>>,
);

/// The handle job tasks settle through.
#[derive(Clone)]
pub(crate) struct Settler {
    tx: mpsc::UnboundedSender<Request>,
}

impl Settler {
    /// Starts the batcher task for `queue`; it ends when every handle is dropped.
    pub(crate) fn start(queue: Queue) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(batch_loop(queue, rx));
        Settler { tx }
    }

    /// Settles one job, batched with whatever else is waiting.
    pub(crate) async fn settle(
        &self,
        job: &ReservedJob,
        how: Settle,
    ) -> Result<JobState, SettleFailure> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((job.without_payload(), how, reply))
            .map_err(|_| SettleFailure::Transient("the settle batcher stopped".into()))?;
        answer.await.unwrap_or_else(|_| {
            Err(SettleFailure::Transient(
                "the settle batcher stopped".into(),
            ))
        })
    }
}

async fn batch_loop(queue: Queue, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let items = batch
            .iter()
            .map(|(job, how, _)| (job, how.clone()))
            .collect();
        match queue.settle_many_applied(items).await {
            Ok((results, replicated)) => {
                let unconfirmed = replicated.err().map(|e| e.to_string());
                for ((_, _, reply), r) in batch.drain(..).zip(results) {
                    let answer = match (r, &unconfirmed) {
                        (Ok(state), None) => Ok(state),
                        (Ok(state), Some(error)) => Err(SettleFailure::Unreplicated {
                            state,
                            error: error.clone(),
                        }),
                        (Err(QueueError::LeaseLost { .. } | QueueError::NotFound { .. }), _) => {
                            Err(SettleFailure::LeaseLost)
                        }
                        (Err(other), _) => Err(SettleFailure::Transient(other.to_string())),
                    };
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (_, _, reply) in batch.drain(..) {
                    let _ = reply.send(Err(SettleFailure::Transient(msg.clone())));
                }
            }
        }
    }
}
