//! The runtime's background duties, apart from running jobs: the periodic
//! sweep (due jobs, expired leases, retention) with the queue-depth gauges,
//! and the readiness ping.

use std::sync::Arc;
use std::time::Duration;

use spool_queue::Queue;

use crate::health::Health;
use crate::metrics as m;

/// How often readiness checks Redis with a PING, whatever the load, and how
/// long the PING may take before Redis counts as unreachable.
const PING_EVERY: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Jobs the sweep handles per step.
const SWEEP_LIMIT: usize = 1000;

/// Keeps readiness true to Redis whatever the load: a busy worker makes no
/// reserve calls, so only a probe of its own notices an outage within seconds.
pub(crate) async fn ping_loop(queue: Queue, health: Arc<Health>) {
    let mut tick = tokio::time::interval(PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = matches!(
            tokio::time::timeout(PING_TIMEOUT, queue.client().ping()).await,
            Ok(Ok(()))
        );
        health.set_redis_ok(ok);
    }
}

/// Sweeps (due jobs, expired leases, retention) and refreshes the queue-depth
/// gauges, every `every`, until its task is aborted (a sweep cut short
/// either ran on Redis or did not). Readiness is [`ping_loop`]'s alone.
pub(crate) async fn sweep_loop(queue: Queue, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = queue.sweep(SWEEP_LIMIT).await {
            tracing::debug!(error = %e, "sweep failed");
        }
        match queue.stats().await {
            Ok(s) => {
                let q = queue.name().to_owned();
                for (state, v) in [
                    ("ready", s.ready),
                    ("scheduled", s.scheduled),
                    ("active", s.active),
                    ("dead", s.dead),
                    ("parked", s.parked),
                ] {
                    metrics::gauge!(m::QUEUE_DEPTH, "queue" => q.clone(), "state" => state)
                        .set(v as f64);
                }
                metrics::gauge!(m::QUEUE_LATENESS, "queue" => q.clone())
                    .set(s.lateness_ms as f64 / 1000.0);
                metrics::gauge!(m::QUEUE_PAUSED, "queue" => q).set(if s.paused {
                    1.0
                } else {
                    0.0
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot read queue depth"),
        }
    }
}
