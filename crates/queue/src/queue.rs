//! The queue API: producers enqueue, consumers reserve and settle, operators
//! inspect and repair. Every state change is one script call (see `scripts/`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::{FromRedisValue, Value};
use serde::Serialize;

use crate::backoff::backoff_delay;
use crate::connection::{BlockingPool, Conn, Endpoint};
use crate::error::{Error, Result};
use crate::job::{JobInfo, JobState, NewJob, ReservedJob, from_ms};
use crate::keys::{Keys, QUEUES_KEY};
use crate::scripts;

/// Default maximum payload: jobs carry references to media, not media.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// Jobs per enqueue script call: large enough to amortise the call, small enough
/// that one call holds Redis for only a few milliseconds.
const ENQUEUE_CHUNK: usize = 1000;
/// Payload bytes per enqueue script call, for the same reason.
const ENQUEUE_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Settlements per settle call.
const SETTLE_CHUNK: usize = 1000;
/// How long an idle consumer blocks per round: one BLPOP and one reserve script a
/// second is the whole cost of an idle worker.
const IDLE_BLOCK: Duration = Duration::from_secs(1);
/// Shortest block: BLPOP treats 0 as "forever".
const MIN_BLOCK: Duration = Duration::from_millis(10);
/// Scheduled and expired jobs a reserve call sweeps on its way; the rest wait for
/// the next call or the periodic sweep, so no reserve is ever slow.
const RESERVE_SWEEP_LIMIT: usize = 100;
/// Jobs one check script call reconciles.
const CHECK_CHUNK: usize = 500;

/// Escapes a key prefix for a SCAN MATCH pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What [`Queue::check`] found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    /// The queue.
    pub queue: String,
    /// Jobs looked at.
    pub examined: usize,
    /// Whether job keys were scanned too (single server) or only the indexes
    /// read (cluster).
    pub keys_scanned: bool,
    /// One line per job out of place: `<id>: <what>`.
    pub findings: Vec<String>,
    /// Whether the findings were repaired.
    pub repaired: bool,
}

/// Entries one script call takes at most (the scripts refuse more).
pub const MAX_BATCH: usize = 10_000;
/// Payload bytes one reserve call moves at most by default: 16 MiB keeps one
/// call well under 100 ms of Redis time while 16 full-size (1 MiB) jobs fit.
pub const DEFAULT_MAX_RESERVE_BYTES: usize = 16 << 20;

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Largest payload accepted by enqueue, in bytes.
    pub max_payload_bytes: usize,
    /// Most payload bytes one reserve call moves (the first job always goes):
    /// bounds how long one call holds Redis and how much one reply carries.
    pub max_reserve_bytes: usize,
    /// A PEM CA bundle to trust for `rediss://` (a private CA); `None` trusts
    /// the public web roots.
    pub tls_ca_pem: Option<Vec<u8>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD,
            max_reserve_bytes: DEFAULT_MAX_RESERVE_BYTES,
            tls_ca_pem: None,
        }
    }
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
        let endpoint = Endpoint::parse(url)?.with_ca(options.tls_ca_pem.clone());
        let conn = endpoint.connect().await?;
        let blocking = BlockingPool::new(endpoint.clone());
        Ok(Client {
            inner: Arc::new(ClientInner {
                endpoint,
                conn,
                blocking,
                options,
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
            registered: Arc::new(AtomicBool::new(false)),
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
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        let mut conn = self.inner.conn.clone();
        cmd.query_async(&mut conn).await.map_err(|e| self.err(e))
    }

    /// Runs a pipeline on the shared connection.
    pub async fn query_pipe<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T> {
        let mut conn = self.inner.conn.clone();
        pipe.query_async(&mut conn).await.map_err(|e| self.err(e))
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
    /// Whether this handle has added the name to the queue index yet.
    registered: Arc<AtomicBool>,
}

/// What a consumer does with a leased job.
#[derive(Debug, Clone)]
pub enum Settle {
    /// It succeeded; store this result (may be empty).
    Complete(Vec<u8>),
    /// It failed; retry after a backoff unless attempts are used up, or go dead
    /// at once when `permanent`.
    Fail {
        /// What went wrong, kept on the job as `last_error`.
        error: String,
        /// Skip the retries.
        permanent: bool,
    },
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
pub enum CancelOutcome {
    /// It was waiting and is now cancelled.
    Cancelled,
    /// It is running; its worker sees the request at its next heartbeat.
    Requested,
    /// It had already ended in this state.
    AlreadyFinished(JobState),
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
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Scheduled jobs that became ready.
    pub promoted: u64,
    /// Expired leases handed back or ended.
    pub recovered: u64,
    /// Retention index entries dropped.
    pub pruned: u64,
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

    // ---- producers -------------------------------------------------------

    /// Enqueues one job and returns its id (the existing job's id when its dedup
    /// key or id is still live).
    pub async fn enqueue(
        &self,
        payload: impl Into<Vec<u8>>,
        options: crate::JobOptions,
    ) -> Result<String> {
        let mut ids = self
            .enqueue_batch(vec![NewJob::with_options(payload, options)])
            .await?;
        ids.pop()
            .ok_or_else(|| self.corrupt("enqueue", &Value::Nil))
    }

    /// Checks a job as [`Queue::enqueue_batch`] would (options, payload size)
    /// without sending it: a producer validates all its input first, so bad
    /// input enqueues nothing.
    pub fn check_job(&self, job: &NewJob) -> Result<()> {
        job.options.validate()?;
        let max = self.client.inner.options.max_payload_bytes;
        if job.payload.len() > max {
            return Err(Error::PayloadTooLarge {
                size: job.payload.len(),
                max,
            });
        }
        Ok(())
    }

    /// Enqueues many jobs, a thousand per script call, and returns their ids in
    /// input order. Every job is checked before any is sent. Each call is atomic;
    /// the batch as a whole is not, but retrying it is safe when the jobs carry
    /// ids ([`crate::JobOptions::id`]): existing ids are not enqueued twice.
    pub async fn enqueue_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<String>> {
        for job in &jobs {
            self.check_job(job)?;
        }
        if !self.registered.load(Ordering::Relaxed) {
            let _: i64 = self
                .client
                .query(redis::cmd("SADD").arg(QUEUES_KEY).arg(&*self.name))
                .await?;
            self.registered.store(true, Ordering::Relaxed);
        }
        let mut ids = Vec::with_capacity(jobs.len());
        let mut start = 0;
        while start < jobs.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < jobs.len()
                && end - start < ENQUEUE_CHUNK
                && (end == start || bytes + jobs[end].payload.len() <= ENQUEUE_CHUNK_BYTES)
            {
                bytes += jobs[end].payload.len();
                end += 1;
            }
            ids.extend(self.enqueue_chunk(&jobs[start..end]).await?);
            start = end;
        }
        Ok(ids)
    }

    async fn enqueue_chunk(&self, jobs: &[NewJob]) -> Result<Vec<String>> {
        let mut inv = self.invocation(&scripts::ENQUEUE);
        inv.arg(&*self.name).arg(jobs.len());
        for job in jobs {
            let o = &job.options;
            let id =
                o.id.clone()
                    .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
            inv.arg(id)
                .arg(&job.payload[..])
                .arg(o.priority)
                .arg(o.delay.map_or(0, |d| d.as_millis() as u64))
                .arg(o.max_attempts)
                .arg(o.backoff.as_millis() as u64)
                .arg(o.backoff_max.as_millis() as u64)
                .arg(o.lease.as_millis() as u64)
                .arg(o.retention.as_secs())
                .arg(o.dedup_key.as_deref().unwrap_or(""));
        }
        self.invoke(&inv).await
    }

    // ---- consumers -------------------------------------------------------

    /// Leases up to `max` jobs, waiting up to `wait` for the first one without
    /// polling: an idle consumer sends about two commands a second, and a job
    /// enqueued while it waits reaches it within milliseconds. Returns an empty
    /// list when `wait` passes with nothing to do.
    pub async fn reserve(&self, max: usize, wait: Duration) -> Result<Vec<ReservedJob>> {
        let until = Instant::now() + wait;
        loop {
            let (jobs, hint) = self.try_reserve(max).await?;
            let now = Instant::now();
            if !jobs.is_empty() || now >= until {
                return Ok(jobs);
            }
            let mut block = (until - now).min(IDLE_BLOCK);
            if let Some(h) = hint {
                block = block.min(h);
            }
            if block >= MIN_BLOCK {
                self.wait_for_wake(block).await?;
            } else {
                tokio::time::sleep(block).await;
            }
        }
    }

    /// One reserve script call, without waiting. Returns the jobs and, when none,
    /// how long until something becomes due.
    pub async fn try_reserve(&self, max: usize) -> Result<(Vec<ReservedJob>, Option<Duration>)> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut inv = self.invocation(&scripts::RESERVE);
        inv.arg(max.clamp(1, MAX_BATCH))
            .arg(token)
            .arg(RESERVE_SWEEP_LIMIT)
            .arg(self.client.inner.options.max_reserve_bytes);
        let reply: Value = self.invoke(&inv).await?;
        let Value::Array(parts) = &reply else {
            return Err(self.corrupt("reserve", &reply));
        };
        let (Some(Value::Array(rows)), Some(Value::Int(hint))) = (parts.first(), parts.get(1))
        else {
            return Err(self.corrupt("reserve", &reply));
        };
        let jobs = rows
            .iter()
            .map(|row| self.decode_reserved(row))
            .collect::<Result<Vec<_>>>()?;
        let hint = u64::try_from(*hint).ok().map(Duration::from_millis);
        Ok((jobs, hint))
    }

    fn decode_reserved(&self, row: &Value) -> Result<ReservedJob> {
        decode_reserved_row(row).ok_or_else(|| self.corrupt("reserve", row))
    }

    async fn wait_for_wake(&self, block: Duration) -> Result<()> {
        let pool = &self.client.inner.blocking;
        let mut lease = pool.get(block).await?;
        let reply: redis::RedisResult<Value> = redis::cmd("BLPOP")
            .arg(&self.keys.wake)
            .arg(block.as_secs_f64())
            .query_async(&mut lease.1)
            .await;
        match reply {
            Ok(_) => {
                pool.put(lease);
                Ok(())
            }
            Err(e) => Err(self.client.err(e)),
        }
    }

    /// Extends the lease by the job's lease duration and stores `progress` when
    /// given. Fails with [`Error::LeaseLost`] when the job is no longer this
    /// consumer's: stop working on it.
    pub async fn heartbeat(&self, job: &ReservedJob, progress: Option<&str>) -> Result<Heartbeat> {
        self.heartbeat_with(job, progress, None).await
    }

    /// Like [`Queue::heartbeat`], extending the lease by `extend` instead of the
    /// job's own lease duration when given.
    pub async fn heartbeat_with(
        &self,
        job: &ReservedJob,
        progress: Option<&str>,
        extend: Option<Duration>,
    ) -> Result<Heartbeat> {
        let mut inv = self.invocation(&scripts::HEARTBEAT);
        inv.arg(&job.id)
            .arg(&job.token)
            .arg(extend.map_or(0, |d| d.as_millis() as u64))
            .arg(progress.unwrap_or(""));
        let reply: Value = self.invoke(&inv).await?;
        let Value::Array(f) = &reply else {
            return Err(self.corrupt("heartbeat", &reply));
        };
        let tag = f
            .first()
            .and_then(|v| String::from_redis_value(v.clone()).ok());
        match (tag.as_deref(), f.get(1), f.get(2)) {
            (Some("ok"), Some(Value::Int(deadline)), Some(Value::Int(cancel))) => Ok(Heartbeat {
                deadline: from_ms(*deadline),
                cancel_requested: *cancel == 1,
            }),
            (Some("lease_lost"), Some(state), _) => Err(Error::LeaseLost {
                id: job.id.clone(),
                state: String::from_redis_value(state.clone()).unwrap_or_default(),
            }),
            (Some("not_found"), _, _) => Err(self.not_found(&job.id)),
            _ => Err(self.corrupt("heartbeat", &reply)),
        }
    }

    /// Ends or hands back one leased job; returns its new state.
    pub async fn settle(&self, job: &ReservedJob, how: Settle) -> Result<JobState> {
        let mut out = self.settle_many(vec![(job, how)]).await?;
        out.pop()
            .unwrap_or_else(|| Err(self.corrupt("settle", &Value::Nil)))
    }

    /// Marks a job completed with `result`.
    pub async fn complete(&self, job: &ReservedJob, result: &[u8]) -> Result<()> {
        self.settle(job, Settle::Complete(result.to_vec()))
            .await
            .map(drop)
    }

    /// Records a failure: retried after a backoff (state `scheduled`) while
    /// attempts remain, else `dead`; `permanent` goes dead at once.
    pub async fn fail(&self, job: &ReservedJob, error: &str, permanent: bool) -> Result<JobState> {
        let how = Settle::Fail {
            error: error.to_owned(),
            permanent,
        };
        self.settle(job, how).await
    }

    /// Hands a job back to the front of the backlog with no attempt penalty.
    pub async fn release(&self, job: &ReservedJob) -> Result<()> {
        self.settle(job, Settle::Release).await.map(drop)
    }

    /// Settles many leased jobs, a thousand per script call. Each entry gets its
    /// own outcome: the new state, or [`Error::LeaseLost`] / [`Error::NotFound`].
    pub async fn settle_many(
        &self,
        items: Vec<(&ReservedJob, Settle)>,
    ) -> Result<Vec<Result<JobState>>> {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(SETTLE_CHUNK) {
            let mut inv = self.invocation(&scripts::SETTLE);
            inv.arg(chunk.len());
            for (job, how) in chunk {
                inv.arg(&job.id).arg(&job.token);
                match how {
                    Settle::Complete(result) => inv.arg("complete").arg(&result[..]).arg(0),
                    Settle::Fail {
                        error,
                        permanent: true,
                    } => inv.arg("dead").arg(error).arg(0),
                    Settle::Fail { error, .. } => {
                        let delay = backoff_delay(job.backoff, job.backoff_max, job.attempt);
                        inv.arg("retry").arg(error).arg(delay.as_millis() as u64)
                    }
                    Settle::Release => inv.arg("release").arg("").arg(0),
                    Settle::Cancelled => inv.arg("cancelled").arg("").arg(0),
                };
            }
            let replies: Vec<String> = self.invoke(&inv).await?;
            for ((job, _), reply) in chunk.iter().zip(replies) {
                out.push(self.decode_settled(&job.id, &reply));
            }
        }
        Ok(out)
    }

    fn decode_settled(&self, id: &str, reply: &str) -> Result<JobState> {
        if let Some(state) = reply.strip_prefix("lease_lost:") {
            return Err(Error::LeaseLost {
                id: id.to_owned(),
                state: state.to_owned(),
            });
        }
        if reply == "not_found" {
            return Err(self.not_found(id));
        }
        reply.parse().map_err(|reason| Error::Corrupt {
            key: self.keys.job(id),
            reason,
        })
    }

    fn not_found(&self, id: &str) -> Error {
        Error::NotFound {
            queue: self.name.to_string(),
            id: id.to_owned(),
        }
    }

    // ---- operators -------------------------------------------------------

    /// Cancels a job: at once when it waits, through its worker when it runs.
    pub async fn cancel(&self, id: &str) -> Result<CancelOutcome> {
        let mut inv = self.invocation(&scripts::CANCEL);
        inv.arg(id);
        let reply: String = self.invoke(&inv).await?;
        match reply.as_str() {
            "cancelled" => Ok(CancelOutcome::Cancelled),
            "requested" => Ok(CancelOutcome::Requested),
            "not_found" => Err(self.not_found(id)),
            other => other
                .strip_prefix("finished:")
                .unwrap_or(other)
                .parse()
                .map(CancelOutcome::AlreadyFinished)
                .map_err(|reason| Error::Corrupt {
                    key: self.keys.job(id),
                    reason,
                }),
        }
    }

    /// Everything stored about job `id`.
    pub async fn info(&self, id: &str) -> Result<JobInfo> {
        let key = self.keys.job(id);
        let h: HashMap<String, Vec<u8>> =
            self.client.query(redis::cmd("HGETALL").arg(&key)).await?;
        if h.is_empty() {
            return Err(self.not_found(id));
        }
        JobInfo::from_hash(&key, &self.name, h)
    }

    /// The depth of every state, read in one round trip of O(1) commands.
    pub async fn stats(&self) -> Result<QueueStats> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        for key in [&k.ready, &k.scheduled, &k.active] {
            pipe.cmd("ZCARD").arg(key);
        }
        pipe.cmd("SCARD").arg(&k.outstanding);
        for key in [&k.dead, &k.completed, &k.cancelled] {
            pipe.cmd("ZCARD").arg(key);
        }
        let mut conn = self.client.inner.conn.clone();
        let v: Vec<u64> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.client.err(e))?;
        let [
            ready,
            scheduled,
            active,
            outstanding,
            dead,
            completed,
            cancelled,
        ] = v[..]
        else {
            return Err(self.corrupt("stats", &Value::Nil));
        };
        Ok(QueueStats {
            queue: self.name.to_string(),
            ready,
            scheduled,
            active,
            outstanding,
            dead,
            completed,
            cancelled,
        })
    }

    /// Reconciles every job of the queue with the index its state says it is
    /// in (`spoolctl check`): a deleted or damaged index, a job left outside
    /// every index, an index entry whose job is gone. With `repair`, fixes
    /// what it finds; without, only reports. Jobs are found through the
    /// indexes and, on a single server, by scanning the queue's job keys (on
    /// a cluster only the indexes are read).
    pub async fn check(&self, repair: bool) -> Result<CheckReport> {
        let k = &self.keys;
        let mut ids: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
        for key in [&k.ready, &k.active, &k.scheduled] {
            let v: Vec<Vec<u8>> = self
                .client
                .query(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1))
                .await?;
            ids.extend(v);
        }
        let v: Vec<Vec<u8>> = self
            .client
            .query(redis::cmd("SMEMBERS").arg(&k.outstanding))
            .await?;
        ids.extend(v);
        let scanned = !self.client.inner.endpoint.is_cluster();
        if scanned {
            let job_prefix = format!("{}job:", k.prefix);
            let pattern = format!("{}*", glob_escape(&job_prefix));
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = self
                    .client
                    .query(
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(1000),
                    )
                    .await?;
                ids.extend(
                    keys.into_iter().filter_map(|key| {
                        key.strip_prefix(job_prefix.as_bytes()).map(<[u8]>::to_vec)
                    }),
                );
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        let ids: Vec<Vec<u8>> = ids.into_iter().filter(|id| !id.is_empty()).collect();
        let mut findings = Vec::new();
        for chunk in ids.chunks(CHECK_CHUNK) {
            let mut inv = self.invocation(&scripts::CHECK);
            inv.arg(if repair { "repair" } else { "check" });
            for id in chunk {
                inv.arg(&id[..]);
            }
            let found: Vec<String> = self.invoke(&inv).await?;
            findings.extend(found);
        }
        Ok(CheckReport {
            queue: self.name.to_string(),
            examined: ids.len(),
            keys_scanned: scanned,
            findings,
            repaired: repair,
        })
    }

    /// Dead jobs, newest first.
    pub async fn dead_list(&self, offset: usize, limit: usize) -> Result<Vec<JobInfo>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = self
            .client
            .query(
                redis::cmd("ZREVRANGE")
                    .arg(&self.keys.dead)
                    .arg(offset)
                    .arg(offset + limit - 1),
            )
            .await?;
        // One round trip for every hash, not one per job.
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(self.keys.job(id));
        }
        let hashes: Vec<HashMap<String, Vec<u8>>> = self.client.query_pipe(&pipe).await?;
        let mut jobs = Vec::with_capacity(ids.len());
        for (id, h) in ids.iter().zip(hashes) {
            // Purged or expired between the two reads: nothing to show.
            if !h.is_empty() {
                jobs.push(JobInfo::from_hash(&self.keys.job(id), &self.name, h)?);
            }
        }
        Ok(jobs)
    }

    /// Puts dead jobs back in the backlog with fresh attempts: the given ids, or
    /// when `ids` is empty the oldest `limit`. Returns how many moved.
    pub async fn dead_retry(&self, ids: &[String], limit: usize) -> Result<u64> {
        self.dead_action("retry", ids, limit).await
    }

    /// Deletes dead jobs: the given ids, or when `ids` is empty the oldest
    /// `limit`. Returns how many were deleted.
    pub async fn dead_purge(&self, ids: &[String], limit: usize) -> Result<u64> {
        self.dead_action("purge", ids, limit).await
    }

    async fn dead_action(&self, action: &str, ids: &[String], limit: usize) -> Result<u64> {
        let mut inv = self.invocation(&scripts::DEAD);
        inv.arg(action).arg(limit.max(1));
        for id in ids {
            inv.arg(id);
        }
        self.invoke(&inv).await
    }

    /// Promotes due scheduled jobs, recovers expired leases and prunes retention
    /// indexes, up to `limit` of each. Any worker may run it at any time.
    pub async fn sweep(&self, limit: usize) -> Result<SweepReport> {
        let mut inv = self.invocation(&scripts::SWEEP);
        inv.arg(limit.max(1));
        let (promoted, recovered, pruned): (u64, u64, u64) = self.invoke(&inv).await?;
        Ok(SweepReport {
            promoted,
            recovered,
            pruned,
        })
    }
}

/// Decodes one job row of the reserve script's reply (see `reserve.lua`);
/// `None` for anything else.
pub(crate) fn decode_reserved_row(row: &Value) -> Option<ReservedJob> {
    let Value::Array(f) = row else {
        return None;
    };
    let int = |i: usize| match f.get(i) {
        Some(Value::Int(v)) => Some(*v),
        _ => None,
    };
    let bytes = |i: usize| match f.get(i) {
        Some(Value::BulkString(b)) => Some(b.clone()),
        _ => None,
    };
    let text = |i: usize| bytes(i).map(|b| String::from_utf8_lossy(&b).into_owned());
    let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
    Some(ReservedJob {
        id: text(0)?,
        payload: bytes(1)?,
        attempt: int(2)?.clamp(0, u32::MAX as i64) as u32,
        max_attempts: int(3)?.clamp(0, u32::MAX as i64) as u32,
        lease: ms(int(4)?),
        enqueued_at: from_ms(int(5)?),
        run_at: from_ms(int(6)?),
        priority: int(7)?.clamp(-1000, 1000) as i32,
        backoff: ms(int(8)?),
        backoff_max: ms(int(9)?),
        token: text(10)?,
        deadline: from_ms(int(11)?),
    })
}

/// Entry points for the fuzz targets (`fuzz/`) and their regression tests:
/// the decoders that read what Redis hands back.
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
