//! Dedicated connections for blocking waits (`BLPOP`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::{BLOCKING_GRACE, BLOCKING_POOL_KEEP, Conn, Endpoint};
use crate::error::{Error, Result};

/// Dedicated connections for blocking waits, reused between waits.
///
/// A connection that failed is dropped rather than returned, so a Redis restart
/// costs each waiter one reconnect.
// One per client, behind an Arc: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum BlockingPool {
    /// A single server: a deadpool-redis pool.
    Single(deadpool_redis::Pool),
    /// A cluster, or a master found through Sentinel: spool's own
    /// connections keyed by the response timeout they were opened with.
    Own {
        endpoint: Endpoint,
        /// The shared connection (through Sentinel, it knows the master).
        shared: Conn,
        idle: Mutex<Vec<(Duration, Conn)>>,
    },
}

/// A blocking connection borrowed from a [`BlockingPool`].
pub(crate) enum Blocking {
    /// From a deadpool-redis pool; goes back when dropped.
    Pooled(deadpool_redis::Connection),
    /// One of spool's own and the longest wait its timeout allows.
    Own(Duration, Conn),
}

impl ConnectionLike for Blocking {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Blocking::Pooled(c) => c.req_packed_command(cmd),
            Blocking::Own(_, c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Blocking::Pooled(c) => c.req_packed_commands(pipeline, offset, count),
            Blocking::Own(_, c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Blocking::Pooled(c) => c.get_db(),
            Blocking::Own(_, c) => c.get_db(),
        }
    }
}

impl BlockingPool {
    /// spool's own pool for `endpoint`, whose shared connection is `shared`.
    pub(crate) fn new(endpoint: Endpoint, shared: &Conn) -> Result<Arc<Self>> {
        Ok(Arc::new(
            if endpoint.is_cluster() || endpoint.is_sentinel() {
                BlockingPool::Own {
                    endpoint,
                    shared: shared.clone(),
                    idle: Mutex::new(Vec::new()),
                }
            } else {
                BlockingPool::Single(endpoint.blocking_pool()?)
            },
        ))
    }

    /// A pool the embedding service built (single server only).
    pub(crate) fn from_deadpool(pool: deadpool_redis::Pool) -> Arc<Self> {
        Arc::new(BlockingPool::Single(pool))
    }

    /// Borrows a connection whose response timeout covers a wait of `block`;
    /// `None` when no pooled connection came within `block` (all busy, or
    /// Redis slow to accept): the caller then polls instead of waiting.
    pub(crate) async fn get(&self, block: Duration, display: &str) -> Result<Option<Blocking>> {
        match self {
            BlockingPool::Single(pool) => {
                let got = tokio::time::timeout(block, pool.get()).await;
                let mut conn = match got {
                    Err(_elapsed) => return Ok(None),
                    Ok(Ok(conn)) => conn,
                    Ok(Err(deadpool_redis::PoolError::Backend(e))) => {
                        return Err(Error::from_redis(display, e));
                    }
                    Ok(Err(e)) => {
                        let io = std::io::Error::other(format!("no blocking connection: {e}"));
                        return Err(Error::from_redis(display, io.into()));
                    }
                };
                conn.set_response_timeout(block + BLOCKING_GRACE);
                Ok(Some(Blocking::Pooled(conn)))
            }
            BlockingPool::Own {
                endpoint,
                shared,
                idle,
            } => {
                let reused = {
                    let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
                    idle.iter()
                        .position(|(b, _)| *b >= block)
                        .map(|i| idle.swap_remove(i))
                };
                let (b, c) = match reused {
                    Some(c) => c,
                    None => {
                        // Round up so that slightly different waits share connections.
                        let block = block.max(Duration::from_secs(1));
                        (block, endpoint.connect_blocking_own(block, shared).await?)
                    }
                };
                Ok(Some(Blocking::Own(b, c)))
            }
        }
    }

    /// Gives back a connection after its command; `healthy: false` drops it.
    pub(crate) fn put(&self, conn: Blocking, healthy: bool) {
        match (self, conn) {
            (_, Blocking::Pooled(c)) => {
                if !healthy {
                    // Out of the pool for good; its slot opens a fresh one.
                    drop(deadpool_redis::Connection::take(c));
                }
            }
            (BlockingPool::Own { idle, .. }, Blocking::Own(b, c)) => {
                let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
                if healthy && idle.len() < BLOCKING_POOL_KEEP {
                    idle.push((b, c));
                }
            }
            (BlockingPool::Single(_), Blocking::Own(..)) => {}
        }
    }
}
