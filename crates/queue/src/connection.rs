//! Connections to Redis: one multiplexed connection for ordinary commands and a
//! small pool of dedicated connections for blocking waits.
//!
//! Ordinary commands (scripts, stats) share one multiplexed connection, which
//! pipelines concurrent requests over one socket and reconnects by itself. A
//! blocking `BLPOP` would stall every request queued behind it on that socket,
//! so blocked consumers each borrow a dedicated connection from [`BlockingPool`].
//! Both kinds work the same against a single server or a Redis Cluster.
//!
//! Why not deadpool-redis for the blocking connections (the project card
//! names it): its manager builds its own `redis::Client` from a URL, so it
//! cannot carry the private CA of `SPOOL_REDIS_CA_FILE`, and it has one
//! response timeout per pool where each wait needs one longer than its own
//! block. The pool here is a Vec behind a mutex, keyed by that timeout, and
//! drops a connection that failed; revisit when deadpool-redis takes a
//! prepared client.

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
/// Idle blocking connections kept for reuse; more are opened on demand.
const BLOCKING_POOL_KEEP: usize = 64;

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

    fn blocking_timeout_config(&self, block: Duration) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(block + BLOCKING_GRACE))
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

    /// Opens a dedicated connection for blocking commands of up to `block`.
    async fn connect_blocking(&self, block: Duration) -> Result<Conn> {
        let err = |e| Error::from_redis(&self.display, e);
        if self.cluster {
            let client = self.cluster_client(block + BLOCKING_GRACE)?;
            Ok(Conn::Cluster(
                client.get_async_connection().await.map_err(err)?,
            ))
        } else {
            let client = self.client().map_err(err)?;
            let conn = client
                .get_multiplexed_async_connection_with_config(&self.blocking_timeout_config(block))
                .await
                .map_err(err)?;
            Ok(Conn::Plain(conn))
        }
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
    /// A dedicated connection to a single server (blocking commands).
    Plain(redis::aio::MultiplexedConnection),
    /// A cluster connection, routing each command by its key's slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
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
            Conn::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Dedicated connections for blocking waits, reused between waits.
///
/// A connection that failed is dropped rather than returned, so a Redis restart
/// costs each waiter one reconnect.
pub(crate) struct BlockingPool {
    endpoint: Endpoint,
    idle: Mutex<Vec<(Duration, Conn)>>,
}

impl BlockingPool {
    pub(crate) fn new(endpoint: Endpoint) -> Arc<Self> {
        Arc::new(BlockingPool {
            endpoint,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Borrows a connection whose response timeout covers a wait of `block`.
    pub(crate) async fn get(&self, block: Duration) -> Result<(Duration, Conn)> {
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.iter()
                .position(|(b, _)| *b >= block)
                .map(|i| idle.swap_remove(i))
        };
        match reused {
            Some(c) => Ok(c),
            None => {
                // Round up so that slightly different waits share connections.
                let block = block.max(Duration::from_secs(1));
                Ok((block, self.endpoint.connect_blocking(block).await?))
            }
        }
    }

    /// Returns a healthy connection for reuse.
    pub(crate) fn put(&self, conn: (Duration, Conn)) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < BLOCKING_POOL_KEEP {
            idle.push(conn);
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
