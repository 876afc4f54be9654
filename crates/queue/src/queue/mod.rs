//! The queue API: producers enqueue, consumers reserve and settle, operators
//! inspect and repair. Every state change is one script call (see `scripts/`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{FromRedisValue, Value};
use serde::Serialize;

use crate::backoff::backoff_delay;
use crate::connection::{BlockingPool, Conn, Endpoint};
use crate::error::{Error, Result};
use crate::job::{JobInfo, JobState, NewJob, ReservedJob, from_ms};
use crate::keys::{Keys, QUEUES_KEY};
use crate::scripts;

mod admin;
pub use log::{LogLevel, LogLine, MAX_LOG_LINES, MAX_LOG_MESSAGE};
mod consume;
mod events;
mod flow;
mod log;
mod produce;
mod registry;
mod server;

pub use admin::CheckReport;
#[cfg(feature = "testing")]
pub(crate) use consume::decode_reserved_row;
pub use events::JobEvent;
pub use flow::{ChildFailure, Flow, FlowChild, MAX_FLOW_DEPTH};
pub use registry::WorkerRecord;
pub use server::{SAFE_EVICTION_POLICY, ServerMemory};

/// Default maximum payload: jobs carry references to media, not media.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// Jobs per enqueue script call: large enough to amortise the call, small enough
/// that one call holds Redis for only a few milliseconds.
const ENQUEUE_CHUNK: usize = 1000;
/// Payload bytes per enqueue script call, for the same reason.
const ENQUEUE_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Settlements per settle call, and beats per heartbeat call.
const SETTLE_CHUNK: usize = 1000;
/// How long an idle consumer blocks per round: one BLPOP and one reserve script a
/// second is the whole cost of an idle worker.
const IDLE_BLOCK: Duration = Duration::from_secs(1);
/// Shortest block: BLPOP treats 0 as "forever".
const MIN_BLOCK: Duration = Duration::from_millis(10);
/// Scheduled and expired jobs a reserve call sweeps on its way; the rest wait for
/// the next call or the periodic sweep, so no reserve is ever slow.
const RESERVE_SWEEP_LIMIT: usize = 100;

/// Entries one script call takes at most (the scripts refuse more).
pub const MAX_BATCH: usize = 10_000;
/// Payload bytes one reserve call moves at most by default: 16 MiB keeps one
/// call well under 100 ms of Redis time while 16 full-size (1 MiB) jobs fit.
pub const DEFAULT_MAX_RESERVE_BYTES: usize = 16 << 20;

/// Most replicas [`ClientOptions::min_replicas`] may ask for.
pub const MAX_MIN_REPLICAS: u32 = 16;
/// How long an enqueue or settle waits for its replicas by default.
pub const DEFAULT_REPLICA_TIMEOUT: Duration = Duration::from_secs(1);

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Largest payload accepted by enqueue, in bytes.
    pub max_payload_bytes: usize,
    /// Most payload bytes one reserve call moves (the first job always goes):
    /// bounds how long one call holds Redis and how much one reply carries.
    pub max_reserve_bytes: usize,
    /// A PEM CA bundle to trust for `rediss://` (a private CA); `None` trusts
    /// the public web roots.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// When above 0, enqueues and settles return only once this many
    /// replicas acknowledged the write (Redis `WAIT`), and fail with
    /// [`Error::NotReplicated`] when they did not within
    /// [`ClientOptions::replica_timeout`]. Single server or Sentinel only.
    pub min_replicas: u32,
    /// How long to wait for [`ClientOptions::min_replicas`].
    pub replica_timeout: Duration,
}

impl ClientOptions {
    /// This value with `max_payload_bytes` set to `v`.
    pub fn with_max_payload_bytes(mut self, v: usize) -> Self {
        self.max_payload_bytes = v;
        self
    }

    /// This value with `max_reserve_bytes` set to `v`.
    pub fn with_max_reserve_bytes(mut self, v: usize) -> Self {
        self.max_reserve_bytes = v;
        self
    }

    /// This value with `tls_ca_pem` set to `v`.
    pub fn with_tls_ca_pem(mut self, v: Option<Vec<u8>>) -> Self {
        self.tls_ca_pem = v;
        self
    }

    /// This value trusting the PEM CA bundle in the file `path` (every
    /// binary's `SPOOL_REDIS_CA_FILE`). The error says why the file cannot
    /// be used, for the caller to put beside its setting's name.
    pub fn with_tls_ca_file(mut self, path: &std::path::Path) -> std::result::Result<Self, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
        if !pem.windows(b"-----BEGIN".len()).any(|w| w == b"-----BEGIN") {
            return Err("it holds no PEM block (-----BEGIN CERTIFICATE-----)".into());
        }
        self.tls_ca_pem = Some(pem);
        Ok(self)
    }

    /// This value with `min_replicas` set to `v`.
    pub fn with_min_replicas(mut self, v: u32) -> Self {
        self.min_replicas = v;
        self
    }

    /// This value with `replica_timeout` set to `v`.
    pub fn with_replica_timeout(mut self, v: Duration) -> Self {
        self.replica_timeout = v;
        self
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD,
            max_reserve_bytes: DEFAULT_MAX_RESERVE_BYTES,
            tls_ca_pem: None,
            min_replicas: 0,
            replica_timeout: DEFAULT_REPLICA_TIMEOUT,
        }
    }
}

/// `min_replicas` needs `WAIT` on the connection that wrote, which a
/// cluster connection (routing each command by key) cannot promise.
fn check_replication(endpoint: &Endpoint, options: &ClientOptions) -> Result<()> {
    if options.min_replicas > MAX_MIN_REPLICAS {
        return Err(Error::InvalidOption {
            field: "min_replicas",
            reason: format!("must be at most {MAX_MIN_REPLICAS}"),
        });
    }
    if options.min_replicas > 0 && endpoint.is_cluster() {
        return Err(Error::InvalidOption {
            field: "min_replicas",
            reason: "waiting for replicas (WAIT) is supported on a single server or Sentinel, not on a Redis Cluster".into(),
        });
    }
    Ok(())
}

/// A connection to the Redis that holds the queues. Cheap to clone; clones share
/// the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    endpoint: Endpoint,
    /// The shared multiplexed connection for every non-blocking command.
    conn: Conn,
    /// Dedicated connections for blocked consumers.
    blocking: Arc<BlockingPool>,
    options: ClientOptions,
    /// With `min_replicas`: the replicas the master had at the last look
    /// (`ROLE`), and when that was. See [`Client::replicated`].
    replicas: std::sync::Mutex<(u32, Option<std::time::Instant>)>,
}

/// How long the master's replica count is trusted before `ROLE` is asked
/// again (one extra round trip a second at most, whatever the load).
const REPLICAS_TTL: Duration = Duration::from_secs(1);

/// Raw Redis access for benchmarks and tests (feature `testing`): not part
/// of the supported API, which keeps redis types out of its signatures.
#[cfg(feature = "testing")]
impl Client {
    /// Runs one raw command on the shared connection.
    #[doc(hidden)]
    pub async fn raw_query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        self.query(cmd).await
    }

    /// Runs a raw pipeline on the shared connection.
    #[doc(hidden)]
    pub async fn raw_query_pipe<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T> {
        self.query_pipe(pipe).await
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The address only: never the URL, which may hold a password.
        f.debug_struct("Client")
            .field("addr", &self.addr())
            .finish()
    }
}

impl Client {
    /// Connects with default options. See [`Client::connect_with`].
    pub async fn connect(url: &str) -> Result<Client> {
        Self::connect_with(url, ClientOptions::default()).await
    }

    /// Connects to `redis://[user:password@]host[:port][/db]` (or `rediss://` for
    /// TLS; a comma-separated list of node URLs, or `redis+cluster://`, for a
    /// Redis Cluster). Fails with [`Error::Unavailable`] when Redis does not answer.
    pub async fn connect_with(url: &str, options: ClientOptions) -> Result<Client> {
        let endpoint = Endpoint::parse(url)?
            .with_ca(options.tls_ca_pem.clone())
            .with_unanimous_sentinels(options.min_replicas > 0);
        check_replication(&endpoint, &options)?;
        let conn = endpoint.connect().await?;
        let blocking = BlockingPool::new(endpoint.clone(), &conn)?;
        Ok(Client {
            inner: Arc::new(ClientInner {
                endpoint,
                conn,
                blocking,
                options,
                replicas: std::sync::Mutex::new((0, None)),
            }),
        })
    }

    /// Like [`Client::connect_with`], with the blocking waits of idle
    /// consumers (`BLPOP`, one connection each while it waits) served by
    /// `pool`, a [`deadpool_redis`] pool the embedding service built and
    /// sizes, so its Redis connection count stays under its control.
    ///
    /// Single server only: the pool must reach the server `url` names, and
    /// each wait sets its borrowed connection's response timeout to its own
    /// block plus a grace, so give spool a pool of its own rather than one
    /// shared with latency-sensitive callers. Refused for a cluster URL.
    pub async fn connect_with_pool(
        url: &str,
        options: ClientOptions,
        pool: deadpool_redis::Pool,
    ) -> Result<Client> {
        let endpoint = Endpoint::parse(url)?
            .with_ca(options.tls_ca_pem.clone())
            .with_unanimous_sentinels(options.min_replicas > 0);
        check_replication(&endpoint, &options)?;
        if endpoint.is_cluster() || endpoint.is_sentinel() {
            return Err(Error::InvalidUrl {
                reason: "a deadpool-redis pool serves a single server at a fixed address, not a Redis Cluster or a master found through Sentinel".into(),
            });
        }
        let conn = endpoint.connect().await?;
        Ok(Client {
            inner: Arc::new(ClientInner {
                endpoint,
                conn,
                blocking: BlockingPool::from_deadpool(pool),
                options,
                replicas: std::sync::Mutex::new((0, None)),
            }),
        })
    }

    /// Checks a Redis URL without connecting; returns its `host:port/db` form
    /// (never the password), for start-up validation and logs.
    pub fn check_url(url: &str) -> Result<String> {
        Ok(Endpoint::parse(url)?.display)
    }

    /// A handle on queue `name`.
    pub fn queue(&self, name: &str) -> Result<Queue> {
        Ok(Queue {
            client: self.clone(),
            name: name.into(),
            keys: Arc::new(Keys::new(name)?),
            registered: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// The names of the queues that have ever been enqueued to.
    pub async fn queues(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(QUEUES_KEY)).await?;
        names.sort();
        Ok(names)
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<()> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }

    /// `host:port/db` of the server, for messages (never the password).
    pub fn addr(&self) -> &str {
        &self.inner.endpoint.display
    }

    /// Runs one command on the shared connection.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        let mut conn = self.inner.conn.clone();
        cmd.query_async(&mut conn).await.map_err(|e| self.err(e))
    }

    /// Runs a pipeline on the shared connection.
    pub(crate) async fn query_pipe<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T> {
        let mut conn = self.inner.conn.clone();
        pipe.query_async(&mut conn).await.map_err(|e| self.err(e))
    }

    /// With [`ClientOptions::min_replicas`] set: waits until the writes made
    /// so far on the shared connection reached that many replicas **and
    /// every replica the master has** (`WAIT`, which covers every earlier
    /// write of the connection, so concurrent callers each wait for at least
    /// their own).
    ///
    /// Why every replica: Sentinel promotes whichever replica its last look
    /// said had the most data, which is not always the one that acknowledged
    /// a write (its offsets are seconds old under load, and a replica still
    /// resyncing can be chosen). A write acknowledged by one of two replicas
    /// was lost when the other was promoted; acknowledged by all of them, it
    /// is on whichever is promoted. `min_replicas` stays the floor: with
    /// fewer replicas attached than that, nothing is acknowledged.
    pub(crate) async fn replicated(&self) -> Result<()> {
        let o = &self.inner.options;
        if o.min_replicas == 0 {
            return Ok(());
        }
        let attached = self.attached_replicas().await;
        let wanted = o.min_replicas.max(attached);
        let got: u32 = self
            .query(
                redis::cmd("WAIT")
                    .arg(wanted)
                    .arg(o.replica_timeout.as_millis() as u64),
            )
            .await?;
        if got < wanted {
            // The count may be stale (a replica left): look again next time.
            if let Ok(mut r) = self.inner.replicas.lock() {
                r.1 = None;
            }
            return Err(Error::NotReplicated {
                addr: self.addr().to_owned(),
                wanted,
                got,
                timeout: o.replica_timeout,
            });
        }
        Ok(())
    }

    /// The replicas attached to the master (`ROLE`), cached for
    /// [`REPLICAS_TTL`]; 0 when it cannot be read (then `min_replicas`
    /// alone applies).
    async fn attached_replicas(&self) -> u32 {
        if let Ok(r) = self.inner.replicas.lock()
            && let (n, Some(at)) = *r
            && at.elapsed() < REPLICAS_TTL
        {
            return n;
        }
        let role: Result<Vec<redis::Value>> = self.query(&redis::cmd("ROLE")).await;
        let n = match role.as_deref() {
            Ok([_, _, redis::Value::Array(replicas), ..]) => replicas.len() as u32,
            _ => 0,
        };
        if let Ok(mut r) = self.inner.replicas.lock() {
            *r = (n, Some(std::time::Instant::now()));
        }
        n
    }

    fn err(&self, e: redis::RedisError) -> Error {
        Error::from_redis(self.addr(), e)
    }
}

/// One queue. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    client: Client,
    name: Arc<str>,
    keys: Arc<Keys>,
    /// When this handle last added the name to the queue index.
    registered: Arc<std::sync::Mutex<Option<Instant>>>,
}

/// What one [`Queue::try_reserve`] call got.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Reservation {
    /// The jobs leased, in backlog order.
    pub jobs: Vec<ReservedJob>,
    /// When none were leased: how long until a scheduled job or a lease
    /// deadline comes due (`None`: nothing pending), so a consumer blocks no
    /// longer than that.
    pub next_due: Option<Duration>,
}

/// What a consumer does with a leased job.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Settle {
    /// It succeeded; store this result (may be empty).
    Complete(Vec<u8>),
    /// It failed and may succeed later: retried after a backoff while
    /// attempts remain, else dead. The error is kept as `last_error`.
    Retry(String),
    /// It failed and no retry can succeed (a bad input, an impossible spec):
    /// dead at once, with the error.
    Dead(String),
    /// Hand it back to the front of the backlog with its attempt refunded (a
    /// draining worker does this).
    Release,
    /// It stopped because a cancel was requested.
    Cancelled,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    /// The new lease deadline (server clock).
    pub deadline: std::time::SystemTime,
    /// Whether someone asked to cancel the job: stop and call
    /// [`Queue::settle`] with [`Settle::Cancelled`].
    pub cancel_requested: bool,
}

/// The answer to [`Queue::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// It was waiting and is now cancelled.
    Cancelled,
    /// It is running; its worker sees the request at its next heartbeat.
    Requested,
    /// It had already ended in this state.
    AlreadyFinished(JobState),
}

/// How often a producer adds its queue to `spool:queues` again.
const REGISTER_EVERY: Duration = Duration::from_secs(10);

/// Minutes of history a queue keeps ([`Queue::history`]).
pub const HISTORY_MINUTES: u64 = 1440;

/// One minute of a queue's history ([`Queue::history`]).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Minute {
    /// The minute's start, ms since the Unix epoch (server clock).
    pub at_ms: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Attempts that failed (retried, dead, or whose lease expired).
    pub failed: u64,
    /// Jobs that went dead (out of attempts, or a permanent failure).
    pub dead: u64,
    /// Attempts started.
    pub started: u64,
    /// Their summed wait from due to start, in ms: `wait_ms / started`
    /// is the minute's mean queue latency.
    pub wait_ms: u64,
}

impl Minute {
    /// A slot as the scripts store it: "minute completed failed dead
    /// started wait_ms"; anything else (a damaged slot) is skipped.
    fn parse(v: &str) -> Option<Minute> {
        let n: Vec<u64> = v
            .split(' ')
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()
            .ok()?;
        let [minute, completed, failed, dead, started, wait_ms] = n[..] else {
            return None;
        };
        Some(Minute {
            at_ms: minute.checked_mul(60_000)?,
            completed,
            failed,
            dead,
            started,
            wait_ms,
        })
    }
}

/// Queue depth by state, each an O(1) read.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// In the backlog.
    pub ready: u64,
    /// Delayed or waiting for a retry.
    pub scheduled: u64,
    /// Leased to workers.
    pub active: u64,
    /// Ready or active: the size of the outstanding-work key.
    pub outstanding: u64,
    /// In the dead-letter set.
    pub dead: u64,
    /// Completed and still retained.
    pub completed: u64,
    /// Cancelled and still retained.
    pub cancelled: u64,
    /// Whether the queue is paused ([`Queue::pause`]).
    pub paused: bool,
    /// The backlog held while paused (ready jobs outside `ready`).
    pub parked: u64,
    /// Flow parents waiting for their children (not outstanding work).
    pub waiting: u64,
    /// How late the oldest due job still in `scheduled` is, in ms (0 when
    /// none is due). Due jobs leave `scheduled` at the next reserve, sweep or
    /// promotion pass; a value above a few seconds means nothing promotes
    /// them (no worker and no promoter), and the autoscaler cannot see them.
    pub lateness_ms: u64,
}

/// Where a pause or resume left a queue ([`Queue::pause`], [`Queue::resume`],
/// [`Queue::pause_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PauseState {
    /// Whether the queue is paused.
    pub paused: bool,
    /// Since when, ms since the Unix epoch (server clock).
    pub paused_at_ms: Option<u64>,
    /// Backlog jobs held while paused.
    pub parked: u64,
    /// Jobs in the backlog (`ready`, a KEDA key).
    pub ready: u64,
    /// Jobs running now; they finish as usual while paused.
    pub active: u64,
}

/// A page of jobs ([`Queue::jobs_page`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobPage {
    /// The jobs that could be read, in the page's order.
    pub jobs: Vec<JobInfo>,
    /// The jobs whose hash could not be read, and why.
    pub unreadable: Vec<Unreadable>,
    /// How many ids the page's index range held (for the next cursor).
    pub ids_read: usize,
}

/// A job that could not be read ([`JobPage::unreadable`]).
#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    /// The job's id.
    pub id: String,
    /// What is wrong with its hash.
    pub reason: String,
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Scheduled jobs that became ready.
    pub promoted: u64,
    /// Expired leases handed back or ended.
    pub recovered: u64,
    /// Retention index entries dropped.
    pub pruned: u64,
    /// How late the oldest due job that this pass left in `scheduled` is
    /// (more were due than one pass moves), in ms; 0 when none.
    pub lateness_ms: u64,
    /// When the next scheduled job is due, in ms from now (server clock);
    /// `None` when nothing is scheduled. A promoter sleeps until then.
    pub next_due_in_ms: Option<u64>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name)
            .field("client", &self.client)
            .finish()
    }
}

impl Queue {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue's Redis keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The client this queue uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn invocation<'a>(&'a self, script: &'a redis::Script) -> redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        for k in self.keys.script_keys() {
            inv.key(k);
        }
        inv.arg(&self.keys.prefix);
        inv
    }

    async fn invoke<T: FromRedisValue>(&self, inv: &redis::ScriptInvocation<'_>) -> Result<T> {
        let mut conn = self.client.inner.conn.clone();
        inv.invoke_async(&mut conn)
            .await
            .map_err(|e| self.client.err(e))
    }

    fn corrupt(&self, what: &str, v: &Value) -> Error {
        Error::Corrupt {
            key: self.keys.prefix.clone(),
            reason: format!("unexpected reply to {what}: {v:?}"),
        }
    }
}

/// Entry points for the fuzz targets (`fuzz/`) and their regression tests:
/// the decoders that read what Redis hands back. Only with the `testing`
/// feature: not part of the API.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Decodes a reserve reply given as RESP bytes; never panics.
    pub fn reserve_reply(resp: &[u8]) -> Option<Vec<ReservedJob>> {
        let v = redis::parse_redis_value(resp).ok()?;
        let Value::Array(parts) = v else { return None };
        let Some(Value::Array(rows)) = parts.first() else {
            return None;
        };
        rows.iter().map(decode_reserved_row).collect()
    }

    /// Decodes a job hash given as alternating field and value lines
    /// (separated by NUL bytes); never panics.
    pub fn job_hash(data: &[u8]) -> Result<JobInfo> {
        let mut parts = data.split(|b| *b == 0);
        let mut h = HashMap::new();
        while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
            h.insert(String::from_utf8_lossy(k).into_owned(), v.to_vec());
        }
        JobInfo::from_hash("spool:{fuzz}:job:x", "fuzz", h)
    }
}
