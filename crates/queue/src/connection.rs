//! Connections to Redis: one multiplexed connection for ordinary commands and a
//! small pool of dedicated connections for blocking waits.
//!
//! Ordinary commands (scripts, stats) share one multiplexed connection, which
//! pipelines concurrent requests over one socket and reconnects by itself. A
//! blocking `BLPOP` would stall every request queued behind it on that socket,
//! so blocked consumers each borrow a dedicated connection from [`BlockingPool`].
//! Both kinds work the same against a single server or a Redis Cluster.
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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};

use crate::error::{Error, Result};

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

/// Where and how to connect, parsed once from a URL.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// One node for a single server; the seed nodes for a cluster.
    nodes: Vec<redis::ConnectionInfo>,
    /// A PEM CA bundle to trust for `rediss://` instead of the public roots.
    tls_ca: Option<Vec<u8>>,
    /// `host:port/db` for messages; never contains the password.
    pub(crate) display: String,
    cluster: bool,
}

impl Endpoint {
    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Parses `redis://[user:pass@]host[:port][/db]` or `rediss://…` (TLS). A
    /// comma-separated list of URLs, or the scheme `redis+cluster://`, means a
    /// Redis Cluster with those seed nodes.
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        if url.is_empty() {
            return Err(Error::InvalidUrl {
                reason: "it is empty".into(),
            });
        }
        let (cluster, list) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
            (true, format!("redis://{rest}"))
        } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
            (true, format!("rediss://{rest}"))
        } else {
            (url.contains(','), url.to_owned())
        };
        let mut nodes = Vec::new();
        for part in list.split(',') {
            let part = part.trim();
            let full = if part.contains("://") {
                part.to_owned()
            } else {
                // A bare host:port after the first URL inherits its scheme.
                let scheme = list.split("://").next().unwrap_or("redis");
                format!("{scheme}://{part}")
            };
            if !(full.starts_with("redis://") || full.starts_with("rediss://")) {
                return Err(Error::InvalidUrl {
                    reason: format!(
                        "unsupported scheme in {:?}",
                        mask_password(&full).split("://").next().unwrap_or("")
                    ),
                });
            }
            let info = full
                .as_str()
                .into_connection_info()
                .map_err(|e| Error::InvalidUrl {
                    reason: format!(
                        "{} ({})",
                        mask_password(&full),
                        e.detail().unwrap_or("malformed")
                    ),
                })?;
            nodes.push(info);
        }
        let display = nodes
            .iter()
            .map(|n| format!("{}/{}", n.addr(), n.redis_settings().db()))
            .collect::<Vec<_>>()
            .join(",");
        Ok(Endpoint {
            nodes,
            tls_ca: None,
            display,
            cluster,
        })
    }

    /// Trusts this PEM CA bundle for `rediss://` connections.
    pub(crate) fn with_ca(mut self, pem: Option<Vec<u8>>) -> Self {
        self.tls_ca = pem;
        self
    }

    fn certs(&self) -> Option<redis::TlsCertificates> {
        install_crypto_provider();
        self.tls_ca.as_ref().map(|ca| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone()),
        })
    }

    fn client(&self) -> redis::RedisResult<redis::Client> {
        match self.certs() {
            Some(certs) => redis::Client::build_with_tls(self.nodes[0].clone(), certs),
            None => redis::Client::open(self.nodes[0].clone()),
        }
    }

    fn cluster_client(&self, response: Duration) -> Result<ClusterClient> {
        let mut builder = ClusterClient::builder(self.nodes.clone())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(response);
        if let Some(certs) = self.certs() {
            builder = builder.certs(certs);
        }
        builder
            .build()
            .map_err(|e| Error::from_redis(&self.display, e))
    }

    /// Opens the shared multiplexed connection.
    pub(crate) async fn connect(&self) -> Result<Conn> {
        install_crypto_provider();
        let err = |e| Error::from_redis(&self.display, e);
        if self.cluster {
            let client = self.cluster_client(RESPONSE_TIMEOUT)?;
            let conn = client.get_async_connection().await.map_err(err)?;
            Ok(Conn::Cluster(conn))
        } else {
            let client = self.client().map_err(err)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1));
            let conn = client
                .get_connection_manager_with_config(config)
                .await
                .map_err(err)?;
            Ok(Conn::Single(conn))
        }
    }

    /// Opens a dedicated cluster connection for blocking commands of up to
    /// `block`.
    async fn connect_blocking_cluster(&self, block: Duration) -> Result<Conn> {
        let err = |e| Error::from_redis(&self.display, e);
        let client = self.cluster_client(block + BLOCKING_GRACE)?;
        Ok(Conn::Cluster(
            client.get_async_connection().await.map_err(err)?,
        ))
    }

    /// spool's own deadpool-redis pool of blocking connections to a single
    /// server, built from the prepared client so a private CA carries over.
    fn blocking_pool(&self) -> Result<deadpool_redis::Pool> {
        let err = |e| Error::from_redis(&self.display, e);
        let client = self.client().map_err(err)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let manager =
            deadpool_redis::Manager::new_with_config(client.get_connection_info().clone(), config)
                .map_err(err)?;
        deadpool_redis::Pool::builder(manager)
            .max_size(BLOCKING_POOL_MAX)
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::InvalidUrl {
                reason: format!("cannot build the blocking-connection pool: {e}"),
            })
    }
}

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
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Dedicated connections for blocking waits, reused between waits.
///
/// A connection that failed is dropped rather than returned, so a Redis restart
/// costs each waiter one reconnect.
pub(crate) enum BlockingPool {
    /// A single server: a deadpool-redis pool.
    Single(deadpool_redis::Pool),
    /// A cluster: connections keyed by the response timeout they were opened
    /// with.
    Cluster {
        endpoint: Endpoint,
        idle: Mutex<Vec<(Duration, Conn)>>,
    },
}

/// A blocking connection borrowed from a [`BlockingPool`].
pub(crate) enum Blocking {
    /// From a deadpool-redis pool; goes back when dropped.
    Pooled(deadpool_redis::Connection),
    /// A cluster connection and the longest wait its timeout allows.
    Cluster(Duration, Conn),
}

impl ConnectionLike for Blocking {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Blocking::Pooled(c) => c.req_packed_command(cmd),
            Blocking::Cluster(_, c) => c.req_packed_command(cmd),
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
            Blocking::Cluster(_, c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Blocking::Pooled(c) => c.get_db(),
            Blocking::Cluster(_, c) => c.get_db(),
        }
    }
}

impl BlockingPool {
    /// spool's own pool for `endpoint`.
    pub(crate) fn new(endpoint: Endpoint) -> Result<Arc<Self>> {
        Ok(Arc::new(if endpoint.is_cluster() {
            BlockingPool::Cluster {
                endpoint,
                idle: Mutex::new(Vec::new()),
            }
        } else {
            BlockingPool::Single(endpoint.blocking_pool()?)
        }))
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
            BlockingPool::Cluster { endpoint, idle } => {
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
                        (block, endpoint.connect_blocking_cluster(block).await?)
                    }
                };
                Ok(Some(Blocking::Cluster(b, c)))
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
            (BlockingPool::Cluster { idle, .. }, Blocking::Cluster(b, c)) => {
                let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
                if healthy && idle.len() < BLOCKING_POOL_KEEP {
                    idle.push((b, c));
                }
            }
            (BlockingPool::Single(_), Blocking::Cluster(..)) => {}
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

    #[test]
    fn url_forms_parse() -> Result<()> {
        let e = Endpoint::parse("redis://user:pw@example:7000/3")?;
        assert_eq!(e.display, "example:7000/3");
        assert!(!e.cluster);
        let c = Endpoint::parse("redis://a:1,b:2,c:3")?;
        assert!(c.cluster);
        assert_eq!(c.nodes.len(), 3);
        assert!(Endpoint::parse("redis+cluster://a:1")?.cluster);
        Ok(())
    }

    #[test]
    fn bad_urls_are_refused_without_leaking_the_password() {
        for bad in ["", "http://x:1", "redis://user:hunter2@host:notaport"] {
            let msg = Endpoint::parse(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(msg.contains("invalid Redis URL"), "{bad}: {msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }
}
