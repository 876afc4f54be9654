//! Redis Sentinel: finding the master by majority, and noticing failovers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, Value};

use super::sentinel_url::SentinelSpec;
use super::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT};

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
    pub(super) db: i64,
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
    pub(super) fn new(
        spec: &SentinelSpec,
        certs: Option<redis::TlsCertificates>,
        unanimous: bool,
    ) -> Self {
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
    pub(super) async fn call<T, F>(self: &Arc<Self>, run: F) -> redis::RedisResult<T>
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
    pub(super) async fn shared(self: &Arc<Self>) -> redis::RedisResult<MultiplexedConnection> {
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
