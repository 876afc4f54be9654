//! Serving with bounds from the HTTP stack itself: hyper's header-read
//! timeout (which also ends a keep-alive connection idle that long: the
//! next request's headers are being waited for), tower-http's request-body
//! and request timeouts (event streams excepted: they are meant to last),
//! and a cap on open connections (one over it is closed at once, so a
//! flood of half-open connections cannot take the file descriptors
//! `/healthz` needs).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// A request's headers must arrive within this, and an idle keep-alive
/// connection is closed after it.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body must arrive within this.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// A request (event streams excepted) must be answered within this.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Open connections at most.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// How long connections may finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `stop` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    stop: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, say: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(max = MAX_CONNECTIONS, "connection refused: too many open");
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let mut closing = closing.clone();
        conns.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let closed = async move {
                // The guard `wait_for` returns is dropped here, before any
                // other await.
                let _ = closing.wait_for(|c| *c).await.map(|_| ());
            };
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = closed => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN, conn).await;
                }
            }
            drop(slot);
        });
        // Reap finished connections as we go.
        while conns.try_join_next().is_some() {}
    }
    let _ = closing_tx.send(true);
    let _ = tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
}
