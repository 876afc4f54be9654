//! The worker's HTTP face: `/metrics` (Prometheus text), `/healthz` (the process
//! lives) and `/readyz` (it wants work: not draining, Redis reachable, and no
//! slot held by a handler that outlived its job).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// What `/readyz` reports, shared by the run loop and the server.
#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
    /// Whether Redis has answered once: not ready before, so a pod that
    /// cannot connect yet (or is about to refuse its Redis) takes no
    /// traffic and never passes for started.
    connected: AtomicBool,
    redis_down: AtomicBool,
    /// Handlers still running after their job was settled without them (they
    /// ignored cancellation): each holds a slot with no job, so the pod is
    /// not ready while any does, and the autoscaler sees why it is slow.
    leftover: AtomicUsize,
}

impl Health {
    /// Marks the worker as draining: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        metrics::gauge!(crate::metrics::DRAINING).set(1.0);
    }

    /// Records whether the last Redis call succeeded.
    pub fn set_redis_ok(&self, ok: bool) {
        if ok {
            self.connected.store(true, Ordering::SeqCst);
        }
        let was_down = self.redis_down.swap(!ok, Ordering::SeqCst);
        if was_down == ok {
            if ok {
                tracing::info!("Redis reachable again");
            } else {
                tracing::warn!("Redis unreachable: not ready until it answers");
            }
        }
    }

    /// Whether the worker is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Records a handler that outlived its job (`true`) or its return.
    pub(crate) fn set_leftover(&self, starts: bool) -> usize {
        if starts {
            self.leftover.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            self.leftover
                .fetch_sub(1, Ordering::SeqCst)
                .saturating_sub(1)
        }
    }

    /// Handlers still running after their job ended without them.
    pub fn leftover_handlers(&self) -> usize {
        self.leftover.load(Ordering::SeqCst)
    }

    /// Whether `/readyz` answers 200: Redis has answered and answers now,
    /// no drain, no leftover handler.
    pub fn is_ready(&self) -> bool {
        !self.is_draining()
            && self.connected.load(Ordering::SeqCst)
            && !self.redis_down.load(Ordering::SeqCst)
            && self.leftover_handlers() == 0
    }
}

async fn metrics_page() -> impl IntoResponse {
    match crate::metrics::installed() {
        Some(h) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain")],
            "another metrics recorder is installed in this process\n".to_owned(),
        ),
    }
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if health.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if health.leftover_handlers() > 0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "a handler that ignored cancellation still holds a slot\n",
        )
    } else if !health.connected.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "connecting to redis\n")
    } else if !health.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

/// Binds `addr` and serves until `stop` fires. Binding happens before this
/// returns, so a taken port is a start-up error, not a silent one.
pub(crate) async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_until_redis_has_answered() {
        let h = Health::default();
        assert!(!h.is_ready(), "ready before Redis answered");
        h.set_redis_ok(true);
        assert!(h.is_ready());
        h.set_redis_ok(false);
        assert!(!h.is_ready());
        h.set_redis_ok(true);
        h.set_draining();
        assert!(!h.is_ready());
    }
}
