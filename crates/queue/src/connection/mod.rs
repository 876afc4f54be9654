//! Connections to Redis: one multiplexed connection for ordinary commands and a
//! small pool of dedicated connections for blocking waits.
//!
//! Ordinary commands (scripts, stats) share one multiplexed connection, which
//! pipelines concurrent requests over one socket and reconnects by itself. A
//! blocking `BLPOP` would stall every request queued behind it on that socket,
//! so blocked consumers each borrow a dedicated connection from [`BlockingPool`].
//! Both kinds work the same against a single server, a Redis Cluster, or a
//! master found through Redis Sentinel.
//!
//! Through Sentinel (`redis+sentinel://`), the sentinels are asked for the
//! master when a connection is first needed and again after any sign of a
//! failover (a broken or refused connection, a timeout, `READONLY` from a
//! demoted master, `LOADING`, `MASTERDOWN`): the failing call returns a
//! transient error, as it would for a restart, and the next call goes to the
//! master the sentinels name then.
//!
//! Against a single server the blocking connections come from a
//! deadpool-redis pool: spool's own (built from the same prepared client, so a
//! private CA carries over), or one the embedding service hands over with
//! [`Client::connect_with_pool`](crate::Client::connect_with_pool). Each wait
//! sets its borrowed connection's response timeout to its own block plus a
//! grace, so one pool serves waits of any length.
//!
//! Against a Redis Cluster the pool stays spool's own (a Vec behind a mutex,
//! keyed by response timeout): deadpool-redis's cluster manager builds its
//! client from bare node URLs, with neither a private CA nor a response
//! timeout, and a cluster connection cannot change its timeout once open.

mod blocking;
mod endpoint;
mod sentinel;
mod sentinel_url;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// How long one ordinary command may take before it counts as a broken
/// connection. Scripts touch at most a few thousand keys per call (batches are
/// chunked), which takes milliseconds; seconds mean the server is gone.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a TCP (and TLS) connection before reporting Redis down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Extra time a blocking command gets beyond its own timeout before the client
/// gives up on the connection.
const BLOCKING_GRACE: Duration = Duration::from_secs(2);
/// Idle blocking connections kept for reuse (cluster); more are opened on demand.
const BLOCKING_POOL_KEEP: usize = 64;
/// Most blocking connections spool's own single-server pool opens: one per
/// consumer waiting at once; a waiter that finds them all busy polls instead.
const BLOCKING_POOL_MAX: usize = 256;

/// The default port of a sentinel.
const SENTINEL_PORT: u16 = 26379;

pub(crate) use blocking::BlockingPool;
pub(crate) use endpoint::Endpoint;
use sentinel::Sentinel;

/// rustls needs one process-wide crypto provider; ring is the one spool links.
/// Installing is idempotent (a provider installed first by the embedding
/// program is kept).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Hides the password of a Redis URL for messages and logs.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((auth, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

/// A connection to a single server or to a cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    /// The shared, self-reconnecting connection to a single server.
    Single(ConnectionManager),
    /// A cluster connection, routing each command by its key's slot.
    Cluster(ClusterConnection),
    /// The master the sentinels name, found again after a failover.
    Sentinel(Arc<Sentinel>),
    /// A dedicated connection to one node (a blocking connection to the
    /// master found through Sentinel).
    Direct(MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Direct(c) => c.req_packed_command(cmd),
            Conn::Sentinel(s) => {
                Box::pin(async move { s.call(async |c| c.req_packed_command(cmd).await).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(s) => Box::pin(async move {
                s.call(async |c| c.req_packed_commands(pipeline, offset, count).await)
                    .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Direct(c) => c.get_db(),
            Conn::Sentinel(s) => s.db,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_masked() {
        assert_eq!(
            mask_password("redis://worker:s3cret@redis:6379/2"),
            "redis://worker:***@redis:6379/2"
        );
        assert_eq!(mask_password("rediss://:s3cret@h"), "rediss://:***@h");
        assert_eq!(mask_password("redis://h:1"), "redis://h:1");
    }
}
