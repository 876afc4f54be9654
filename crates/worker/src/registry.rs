//! This worker's record in the live worker registry
//! ([`spool_queue::WorkerRecord`]): written at start, refreshed every
//! heartbeat period with the jobs it runs and whether it drains, expiring
//! after two lease periods so a SIGKILLed worker disappears by itself, and
//! removed when the worker exits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use spool_queue::{Queue, WorkerRecord};
use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;

/// What an embedding program adds to the record, called at every refresh.
pub(crate) type InfoFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// How long removing the record at exit may take: well inside
/// `SHUTDOWN_MARGIN`, since the record expires by itself anyway.
const UNREGISTER_WAIT: Duration = Duration::from_millis(500);

/// The refresh task.
pub(crate) struct Registry {
    task: tokio::task::JoinHandle<()>,
    queue: Queue,
    id: String,
}

impl Registry {
    /// Registers now and keeps refreshing until [`Registry::stop`].
    pub(crate) fn start(
        queue: Queue,
        cfg: &WorkerConfig,
        running: Arc<Mutex<crate::execute::IdCounts>>,
        draining: CancellationToken,
        info: Option<InfoFn>,
    ) -> Registry {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let mut record = WorkerRecord::new(
            queue.name(),
            &host,
            env!("CARGO_PKG_VERSION"),
            cfg.concurrency,
        );
        let lease = cfg.lease.unwrap_or(spool_queue::DEFAULT_LEASE);
        let every = cfg.heartbeat_for(lease);
        let ttl = lease * 2;
        let id = record.id.clone();
        let q = queue.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    // Show the drain at once, not at the next tick.
                    _ = draining.cancelled(), if !record.draining => {}
                }
                record.active = {
                    let ids = running.lock().unwrap_or_else(|p| p.into_inner());
                    let mut v: Vec<String> = ids.ids.keys().cloned().collect();
                    v.sort();
                    v
                };
                record.draining = draining.is_cancelled();
                if let Some(f) = &info {
                    record.extra = f();
                }
                if let Err(e) = q.register_worker(&record, ttl).await {
                    tracing::debug!(error = %e, "cannot refresh the worker registry");
                }
            }
        });
        Registry { task, queue, id }
    }

    /// Stops refreshing and removes the record, unless Redis did not answer
    /// the releases (`redis_ok` false): then the record is left to expire,
    /// so the exit stays within its bound.
    pub(crate) async fn stop(self, redis_ok: bool) {
        self.task.abort();
        if !redis_ok {
            return;
        }
        let gone =
            tokio::time::timeout(UNREGISTER_WAIT, self.queue.unregister_worker(&self.id)).await;
        if !matches!(gone, Ok(Ok(()))) {
            tracing::debug!("could not remove this worker's registry record; it expires by itself");
        }
    }
}
