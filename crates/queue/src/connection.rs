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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
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

/// The default port of a sentinel.
const SENTINEL_PORT: u16 = 26379;

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
    async fn connect_blocking_own(&self, block: Duration, shared: &Conn) -> Result<Conn> {
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

/// `redis+sentinel://[user:pass@]host1[:port],host2[:port]/<master>[/db]`
/// (`rediss+sentinel://` for TLS to the sentinels and the master). The
/// credentials are the master's; the sentinels are asked without any.
#[derive(Clone)]
struct SentinelSpec {
    sentinels: Vec<(String, u16)>,
    master: String,
    db: i64,
    username: Option<String>,
    password: Option<String>,
    tls: bool,
}

impl SentinelSpec {
    /// `None` when `url` is not a sentinel URL.
    fn parse(url: &str) -> Result<Option<SentinelSpec>> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("redis+sentinel://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("rediss+sentinel://") {
            (true, r)
        } else {
            return Ok(None);
        };
        let bad = |why: &str| Error::InvalidUrl {
            reason: format!(
                "{} ({why}); expected redis+sentinel://[user:password@]host1:26379,host2:26379/<master-name>[/db]",
                mask_password(url)
            ),
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').ok_or_else(|| bad("no master name"))?;
        let (master, db) = match path.split_once('/') {
            Some((m, d)) if !d.is_empty() => (
                m,
                d.parse::<i64>()
                    .ok()
                    .filter(|d| (0..=15_000).contains(d))
                    .ok_or_else(|| bad("the database is not a number"))?,
            ),
            Some((m, _)) => (m, 0),
            None => (path, 0),
        };
        if master.is_empty()
            || !master
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        {
            return Err(bad(
                "the master name must be letters, digits, '-', '_' or '.'",
            ));
        }
        let mut sentinels = Vec::new();
        for h in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let (host, port) = match h.rsplit_once(':') {
                Some((host, port)) if !host.ends_with(':') => (
                    host.trim_start_matches('[').trim_end_matches(']'),
                    port.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| bad("a sentinel's port is not a number"))?,
                ),
                _ => (h, SENTINEL_PORT),
            };
            if host.is_empty() {
                return Err(bad("a sentinel's host is empty"));
            }
            sentinels.push((host.to_owned(), port));
        }
        if sentinels.is_empty() {
            return Err(bad("no sentinel address"));
        }
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| bad("the credentials are not valid percent-encoding"))
        };
        let (username, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (
                    (!u.is_empty()).then(|| decode(u)).transpose()?,
                    Some(decode(p)?),
                ),
                None => (Some(decode(a)?), None),
            },
        };
        Ok(Some(SentinelSpec {
            sentinels,
            master: master.to_owned(),
            db,
            username,
            password,
            tls,
        }))
    }

    /// `sentinel:<master>@h1:26379,h2:26379/db`, never the password.
    fn display(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect();
        format!("sentinel:{}@{}/{}", self.master, hosts.join(","), self.db)
    }
}

/// `%XX` decoding for URL credentials.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The master found through the sentinels, and the shared connection to it
/// until a sign of failover drops it, or until a re-check finds that the
/// sentinels name another master.
///
/// The master is the address a majority of the distinct sentinels name
/// (`SENTINEL GET-MASTER-ADDR-BY-NAME`, asked of each), and it must answer
/// `ROLE` as a master. Sentinels are counted by address, after DNS: a host
/// name that resolves to several addresses (a headless Service) is that many
/// sentinels, and one listed twice is one vote. A single sentinel gets no
/// majority check, which is logged.
///
/// A connection is re-checked at least every [`RECHECK`]: the sentinels
/// are asked again and, when a majority names another master (a failover
/// the connection never noticed: the old master was frozen, not killed), the
/// connection is dropped, so an old master stops receiving writes within
/// about a second of the sentinels' decision instead of at its next error. Taking the first sentinel's word, as simple clients
/// do, can send writes to an old master that restarted before every
/// sentinel learned of the failover: it answers as a master until the
/// sentinels demote it, and what it acknowledged meanwhile is discarded
/// when it resyncs.
pub(crate) struct Sentinel {
    spec: SentinelSpec,
    /// Refuse a master some answering sentinel does not name (see
    /// [`Endpoint::with_unanimous_sentinels`]).
    unanimous: bool,
    /// Set when a majority of the sentinels that answered know no master
    /// of this name (a typo in the URL, not a failover).
    pub(crate) unknown_master: std::sync::atomic::AtomicBool,
    /// Set when the last resolution found the answering sentinels naming
    /// different masters (with `unanimous`); read by the re-check.
    disagreed: std::sync::atomic::AtomicBool,
    /// Bumped each time a re-check leaves a master the sentinels no longer
    /// name: calls in flight on the old connection end at once (transient)
    /// instead of waiting for an answer that may come from a demoted node.
    left: tokio::sync::watch::Sender<u64>,
    /// When the shared connection was last used: the re-check runs only
    /// while the client is busy (an idle client costs the sentinels nothing).
    last_used: Mutex<std::time::Instant>,
    /// Whether the re-check task runs.
    rechecking: std::sync::atomic::AtomicBool,
    /// Warned once that only one sentinel could be asked.
    warned_single: std::sync::atomic::AtomicBool,
    certs: Option<redis::TlsCertificates>,
    /// One resolution at a time.
    resolving: tokio::sync::Mutex<()>,
    /// The master's address and the shared connection to it, until a sign
    /// of failover drops them.
    current: Mutex<Option<((String, u16), MultiplexedConnection)>>,
    db: i64,
}

/// How often the shared connection's master is confirmed with the sentinels
/// (a client then writes to a demoted master for about this long at most
/// after the sentinels' decision, measured in tests/tests/sentinel.rs).
const RECHECK: Duration = Duration::from_secs(1);
/// A client unused this long stops re-checking until its next call.
const RECHECK_IDLE: Duration = Duration::from_secs(10);

/// An error that reads as a failover in progress (transient).
fn in_failover(what: String) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::NotConnected, what))
}

impl Sentinel {
    fn new(spec: &SentinelSpec, certs: Option<redis::TlsCertificates>, unanimous: bool) -> Self {
        Sentinel {
            spec: spec.clone(),
            unanimous,
            unknown_master: std::sync::atomic::AtomicBool::new(false),
            disagreed: std::sync::atomic::AtomicBool::new(false),
            left: tokio::sync::watch::Sender::new(0),
            last_used: Mutex::new(std::time::Instant::now()),
            rechecking: std::sync::atomic::AtomicBool::new(false),
            warned_single: std::sync::atomic::AtomicBool::new(false),
            certs,
            resolving: tokio::sync::Mutex::new(()),
            current: Mutex::new(None),
            db: spec.db,
        }
    }

    fn client_for(
        &self,
        host: &str,
        port: u16,
        redis: redis::RedisConnectionInfo,
    ) -> redis::RedisResult<redis::Client> {
        let addr = if self.spec.tls {
            redis::ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host.to_owned(), port)
        };
        let info = addr.into_connection_info()?.set_redis_settings(redis);
        match &self.certs {
            Some(c) if self.spec.tls => redis::Client::build_with_tls(info, c.clone()),
            _ => redis::Client::open(info),
        }
    }

    /// The distinct sentinels: every address each configured host resolves
    /// to (a name that does not resolve stays one sentinel, unreachable).
    async fn sentinel_addrs(&self) -> Vec<(String, u16)> {
        let mut out: Vec<(String, u16)> = Vec::new();
        for (host, port) in &self.spec.sentinels {
            let found: Vec<(String, u16)> =
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(addrs) => addrs.map(|a| (a.ip().to_string(), a.port())).collect(),
                    Err(_) => Vec::new(),
                };
            if found.is_empty() {
                out.push((host.clone(), *port));
            }
            for a in found {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// The master's address as a majority of the distinct sentinels name it.
    async fn resolve(&self) -> redis::RedisResult<(String, u16)> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT));
        let sentinels = self.sentinel_addrs().await;
        if sentinels.len() == 1
            && !self
                .warned_single
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                sentinel = %format!("{}:{}", sentinels[0].0, sentinels[0].1),
                "only one sentinel could be asked for the master: its word is taken without a majority check; list every sentinel in the URL, or a name that resolves to all of them"
            );
        }
        let config = &config;
        let asked = sentinels.iter().map(|(host, port)| async move {
            let client = self
                .client_for(host, *port, redis::RedisConnectionInfo::default())
                .ok()?;
            let mut c = client
                .get_multiplexed_async_connection_with_config(config)
                .await
                .ok()?;
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&self.spec.master)
                .query_async::<Option<(String, u16)>>(&mut c)
                .await
                .ok()
        });
        // Asked at once: a dead sentinel costs its timeout once, not in turn.
        let answers = futures::future::join_all(asked).await;
        let mut votes: Vec<((String, u16), usize)> = Vec::new();
        let mut unknown = 0;
        for answer in answers.into_iter().flatten() {
            match answer {
                Some(addr) => match votes.iter_mut().find(|(a, _)| *a == addr) {
                    Some((_, n)) => *n += 1,
                    None => votes.push((addr, 1)),
                },
                None => unknown += 1,
            }
        }
        let need = sentinels.len() / 2 + 1;
        let disagree = self.unanimous && votes.len() > 1;
        self.disagreed
            .store(disagree, std::sync::atomic::Ordering::Relaxed);
        if disagree {
            // A failover not every sentinel has taken in yet: a sentinel
            // still naming the old master can demote the new one (after its
            // own 8 s wait), wiping what it acknowledged. Nothing is
            // acknowledged until they agree.
            return Err(in_failover(format!(
                "the sentinels disagree on the master of {:?} ({}): a failover is settling; retry",
                self.spec.master,
                votes
                    .iter()
                    .map(|((h, p), n)| format!("{h}:{p} by {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if unknown >= need {
            self.unknown_master
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(in_failover(format!(
                "{unknown} of the {} sentinels know no master named {:?}: check the master name in the URL",
                sentinels.len(),
                self.spec.master
            )));
        }
        votes
            .into_iter()
            .find(|(_, n)| *n >= need)
            .map(|(a, _)| a)
            .ok_or_else(|| {
                in_failover(format!(
                    "no majority of the {} sentinels names a master for {:?} (a failover in progress, or sentinels down)",
                    sentinels.len(),
                    self.spec.master
                ))
            })
    }

    /// Starts the re-check task once: every [`RECHECK`] while the client
    /// was used in the last [`RECHECK_IDLE`], a majority of the sentinels
    /// must still name the connection's master; when they name another, the
    /// connection is dropped and calls in flight on it end. It stops when
    /// the client is dropped.
    fn start_recheck(self: &Arc<Self>) {
        if self
            .rechecking
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RECHECK).await;
                let Some(this) = weak.upgrade() else { return };
                let busy = this
                    .last_used
                    .lock()
                    .map_or(true, |t| t.elapsed() < RECHECK_IDLE);
                let addr = this
                    .current
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|(a, _)| a.clone());
                let (Some(addr), true) = (addr, busy) else {
                    continue;
                };
                let named = this.resolve().await;
                if let Err(e) = &named
                    && this.disagreed.load(std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(error = %e, "leaving the master until the sentinels agree");
                    let mut current = this.current.lock().unwrap_or_else(|p| p.into_inner());
                    if current.as_ref().is_some_and(|(a, _)| *a == addr) {
                        *current = None;
                        this.left.send_modify(|g| *g += 1);
                    }
                    continue;
                }
                if let Ok(now) = named
                    && now != addr
                {
                    tracing::warn!(
                        old = %format!("{}:{}", addr.0, addr.1),
                        new = %format!("{}:{}", now.0, now.1),
                        "the sentinels name another master: leaving the old one"
                    );
                    let mut current = this.current.lock().unwrap_or_else(|p| p.into_inner());
                    if current.as_ref().is_some_and(|(a, _)| *a == addr) {
                        *current = None;
                        this.left.send_modify(|g| *g += 1);
                    }
                }
            }
        });
    }

    /// Runs one call on the shared connection; it ends with a transient
    /// error when a re-check leaves the master while it is in flight.
    async fn call<T, F>(self: &Arc<Self>, run: F) -> redis::RedisResult<T>
    where
        F: AsyncFnOnce(&mut MultiplexedConnection) -> redis::RedisResult<T>,
    {
        let mut gone = self.left.subscribe();
        let mut c = self.shared().await?;
        if let Ok(mut t) = self.last_used.lock() {
            *t = std::time::Instant::now();
        }
        let r = tokio::select! {
            r = run(&mut c) => r,
            _ = gone.changed() => Err(in_failover(
                "the sentinels named another master while this call was in flight; it may not have been applied: retry".to_owned(),
            )),
        };
        self.after(&r);
        r
    }

    /// A new connection to `addr`, with this response timeout, once it
    /// answers `ROLE` as a master.
    async fn connect_to(
        &self,
        (host, port): &(String, u16),
        response: Duration,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let mut info = redis::RedisConnectionInfo::default().set_db(self.spec.db);
        if let Some(u) = &self.spec.username {
            info = info.set_username(u);
        }
        if let Some(p) = &self.spec.password {
            info = info.set_password(p);
        }
        let client = self.client_for(host, *port, info)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
        let is_master = matches!(role.first(), Some(Value::BulkString(b)) if b == b"master")
            || matches!(role.first(), Some(Value::SimpleString(s)) if s == "master");
        if !is_master {
            return Err(in_failover(format!(
                "the sentinels name {host}:{port}, which does not answer as a master yet"
            )));
        }
        Ok(conn)
    }

    /// A new dedicated connection to the master, with this response
    /// timeout: at the address the shared connection found (no sentinel
    /// round trips per blocking connection), or, when there is none or it no
    /// longer answers as the master, the one the sentinels name now.
    pub(crate) async fn master(
        &self,
        response: Duration,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let known = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(addr, _)| addr.clone());
        if let Some(addr) = known {
            match self.connect_to(&addr, response).await {
                Ok(c) => return Ok(c),
                Err(e) => self.after::<()>(&Err(e)),
            }
        }
        let addr = self.resolve().await?;
        self.connect_to(&addr, response).await
    }

    /// The shared connection, found through the sentinels when there is
    /// none.
    async fn shared(self: &Arc<Self>) -> redis::RedisResult<MultiplexedConnection> {
        let cached = || {
            self.current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|(a, c)| (a.clone(), c.clone()))
        };
        if let Some((_, c)) = cached() {
            return Ok(c);
        }
        let _one = self.resolving.lock().await;
        // Found by the caller that held the lock before us.
        if let Some((_, c)) = cached() {
            return Ok(c);
        }
        let addr = self.resolve().await?;
        let c = self.connect_to(&addr, RESPONSE_TIMEOUT).await?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((addr, c.clone()));
        self.start_recheck();
        Ok(c)
    }

    /// Drops the shared connection after a sign of failover, so the next
    /// call asks the sentinels again.
    fn after<T>(&self, r: &redis::RedisResult<T>) {
        if let Err(e) = r
            && failover_sign(e)
        {
            *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
}

/// Whether an error means the connection's node may no longer be the
/// master: broken or refused, timed out, or a replica's or loading node's
/// answer.
fn failover_sign(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::ReadOnly
                    | redis::ServerErrorKind::BusyLoading
                    | redis::ServerErrorKind::MasterDown
            )
        )
}

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
