//! Where to connect: [`Endpoint`], parsed once from `SPOOL_REDIS_URL`
//! (a single server, a cluster's seed nodes, or sentinels), and the
//! connections it opens.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManagerConfig;
use redis::cluster::ClusterClient;
use redis::{AsyncConnectionConfig, IntoConnectionInfo};

use super::sentinel::Sentinel;
use super::sentinel_url::SentinelSpec;
use super::{
    BLOCKING_GRACE, BLOCKING_POOL_MAX, CONNECT_TIMEOUT, Conn, RESPONSE_TIMEOUT,
    install_crypto_provider, mask_password,
};
use crate::error::{Error, Result};

/// Where and how to connect, parsed once from a URL.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// One node for a single server; the seed nodes for a cluster; none
    /// through Sentinel.
    nodes: Vec<redis::ConnectionInfo>,
    /// The sentinels and the master's name, with its credentials.
    sentinel: Option<SentinelSpec>,
    /// A PEM CA bundle to trust for `rediss://` instead of the public roots.
    tls_ca: Option<Vec<u8>>,
    /// Through Sentinel: acknowledge nothing while the sentinels that answer
    /// disagree on the master (set with `min_replicas`, see [`Sentinel`]).
    unanimous: bool,
    /// `host:port/db` for messages; never contains the password.
    pub(crate) display: String,
    cluster: bool,
}

impl Endpoint {
    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Whether the master is found through Redis Sentinel.
    pub(crate) fn is_sentinel(&self) -> bool {
        self.sentinel.is_some()
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
        if let Some(spec) = SentinelSpec::parse(url)? {
            let display = spec.display();
            return Ok(Endpoint {
                nodes: Vec::new(),
                sentinel: Some(spec),
                tls_ca: None,
                unanimous: false,
                display,
                cluster: false,
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
            sentinel: None,
            tls_ca: None,
            unanimous: false,
            display,
            cluster,
        })
    }

    /// Trusts this PEM CA bundle for `rediss://` connections.
    pub(crate) fn with_ca(mut self, pem: Option<Vec<u8>>) -> Self {
        self.tls_ca = pem;
        self
    }

    /// Through Sentinel, require every sentinel that answers to name the
    /// same master (a failover still settling otherwise): for clients that
    /// asked for durable acknowledgements (`min_replicas`).
    pub(crate) fn with_unanimous_sentinels(mut self, on: bool) -> Self {
        self.unanimous = on;
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
        if let Some(spec) = &self.sentinel {
            let sentinel = Arc::new(Sentinel::new(spec, self.certs(), self.unanimous));
            if let Err(e) = sentinel.shared().await {
                // A master name no sentinel knows is a setting to fix, not a
                // failover to wait out.
                if sentinel
                    .unknown_master
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    return Err(Error::InvalidUrl {
                        reason: format!(
                            "{} (SPOOL_REDIS_URL): no sentinel knows a master named {:?}; check the name after the last '/' of the URL (SENTINEL MASTERS lists them)",
                            self.display, spec.master
                        ),
                    });
                }
                return Err(err(e));
            }
            return Ok(Conn::Sentinel(sentinel));
        }
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

    /// Opens a dedicated connection (cluster, or the current master through
    /// Sentinel) for blocking commands of up to `block`.
    pub(super) async fn connect_blocking_own(
        &self,
        block: Duration,
        shared: &Conn,
    ) -> Result<Conn> {
        let err = |e| Error::from_redis(&self.display, e);
        if let Conn::Sentinel(s) = shared {
            return Ok(Conn::Direct(
                s.master(block + BLOCKING_GRACE).await.map_err(err)?,
            ));
        }
        let client = self.cluster_client(block + BLOCKING_GRACE)?;
        Ok(Conn::Cluster(
            client.get_async_connection().await.map_err(err)?,
        ))
    }

    /// spool's own deadpool-redis pool of blocking connections to a single
    /// server, built from the prepared client so a private CA carries over.
    pub(super) fn blocking_pool(&self) -> Result<deadpool_redis::Pool> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms_parse() -> Result<()> {
        let e = Endpoint::parse("redis://user:pw@example:7000/3")?;
        assert_eq!(e.display, "example:7000/3");
        assert!(!e.cluster);
        let c = Endpoint::parse("redis://a:1,b:2,c:3")?;
        assert!(c.cluster);
        assert_eq!(c.nodes.len(), 3);
        assert!(Endpoint::parse("redis+cluster://a:1")?.cluster);
        let s = Endpoint::parse("redis+sentinel://u:p%40ss@s1:5000,s2/mymaster/3")?;
        assert!(s.is_sentinel() && !s.is_cluster());
        assert_eq!(s.display, "sentinel:mymaster@s1:5000,s2:26379/3");
        let spec = s.sentinel.as_ref().expect("sentinel");
        assert_eq!(spec.password.as_deref(), Some("p@ss"));
        assert_eq!(spec.username.as_deref(), Some("u"));
        assert!(!spec.tls);
        assert!(
            Endpoint::parse("rediss+sentinel://h/m")?
                .sentinel
                .is_some_and(|s| s.tls)
        );
        for bad in [
            "redis+sentinel://h1,h2",
            "redis+sentinel://h1/",
            "redis+sentinel://h1:x/m",
            "redis+sentinel:///m",
            "redis+sentinel://h/m/notadb",
            "redis+sentinel://h/m m",
        ] {
            let e = Endpoint::parse(bad).err();
            assert!(
                matches!(e, Some(Error::InvalidUrl { .. })),
                "{bad} parsed: {e:?}"
            );
        }
        let e = Endpoint::parse("redis+sentinel://:hunter2@h/m m")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.contains("hunter2") && e.contains("master name"), "{e}");
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
