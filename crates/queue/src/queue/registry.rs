//! The live worker registry: each worker process keeps a record of itself in
//! Redis (what it runs, whether it drains, its GPU), refreshed with its
//! heartbeat and expiring on its own, so a SIGKILLed worker disappears
//! without anyone cleaning up after it. Read by `spoolctl workers` and the
//! console.
//!
//! Keys (hash-tagged with the queue, docs/protocol.md): `spool:{q}:workers`,
//! a ZSET of worker ids scored by last-seen milliseconds, and
//! `spool:{q}:worker:<id>`, the record as JSON with a TTL.

use super::*;

/// Longest worker id: it becomes part of a key.
const MAX_WORKER_ID: usize = 200;

/// One worker process, as it registers itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct WorkerRecord {
    /// Unique per process: `<host>-<pid>-<random>`.
    pub id: String,
    /// The Kubernetes pod (`POD_NAME`, else `HOSTNAME`), when known.
    pub pod: Option<String>,
    /// The machine's host name.
    pub host: String,
    /// The worker's version.
    pub version: String,
    /// The queue it works.
    pub queue: String,
    /// Jobs it runs at once at most.
    pub concurrency: usize,
    /// The ids of the jobs it is running now.
    pub active: Vec<String>,
    /// Whether it is draining (SIGTERM received).
    pub draining: bool,
    /// When it started, ms since the epoch.
    pub started_at_ms: u64,
    /// When it last refreshed this record, ms since the epoch.
    pub last_seen_ms: u64,
    /// The queue protocol it speaks ([`crate::PROTOCOL`]; records written
    /// before the field read as 1). Producers warn when theirs differs.
    #[serde(default = "protocol_one")]
    pub protocol: u32,
    /// What the embedding program adds (the encoder worker: its GPUs).
    #[serde(default)]
    pub extra: serde_json::Value,
}

fn protocol_one() -> u32 {
    1
}

impl WorkerRecord {
    /// A record for this process, with the id made from `host`, the pid and
    /// a random suffix.
    pub fn new(queue: &str, host: &str, version: &str, concurrency: usize) -> Self {
        let now = now_ms();
        let host: String = host
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            .take(100)
            .collect();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        WorkerRecord {
            id: format!("{host}-{}-{}", std::process::id(), &suffix[..6]),
            pod: std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .ok(),
            host,
            version: version.to_owned(),
            queue: queue.to_owned(),
            concurrency,
            active: Vec::new(),
            draining: false,
            started_at_ms: now,
            last_seen_ms: now,
            protocol: crate::PROTOCOL,
            extra: serde_json::Value::Null,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Queue {
    fn workers_key(&self) -> String {
        format!("{}workers", self.keys.prefix)
    }

    fn worker_key(&self, id: &str) -> String {
        format!("{}worker:{id}", self.keys.prefix)
    }

    /// Writes (or refreshes) `record`, which expires after `ttl` unless
    /// refreshed, and forgets the workers whose own records expired.
    /// `last_seen_ms` is set to the Redis server's time.
    ///
    /// The index is scored by each record's expiry on the server's clock:
    /// a worker never trims another by its own TTL (a 1 s-lease worker used
    /// to hide a 60 s-lease one) nor by its own clock (one 10 minutes ahead
    /// hid every other).
    pub async fn register_worker(&self, record: &WorkerRecord, ttl: Duration) -> Result<()> {
        if record.id.is_empty()
            || record.id.len() > MAX_WORKER_ID
            || record.id.contains(char::is_whitespace)
        {
            return Err(Error::InvalidOption {
                field: "worker id",
                reason: format!("must be 1 to {MAX_WORKER_ID} bytes without whitespace"),
            });
        }
        let mut rec = record.clone();
        let (secs, micros): (u64, u64) = self.client.query(&redis::cmd("TIME")).await?;
        let server_now = secs * 1000 + micros / 1000;
        rec.last_seen_ms = server_now;
        let json = serde_json::to_string(&rec).map_err(|e| Error::InvalidOption {
            field: "worker record",
            reason: e.to_string(),
        })?;
        let ttl_ms = ttl.as_millis().clamp(1000, u64::MAX as u128) as u64;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.worker_key(&rec.id))
            .arg(json)
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        pipe.cmd("ZADD")
            .arg(self.workers_key())
            .arg(server_now.saturating_add(ttl_ms))
            .arg(&rec.id)
            .ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(self.workers_key())
            .arg("-inf")
            .arg(format!("({server_now}"))
            .ignore();
        self.client.query_pipe::<()>(&pipe).await
    }

    /// Removes a worker's record (a drained worker at exit).
    pub async fn unregister_worker(&self, id: &str) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(self.worker_key(id)).ignore();
        pipe.cmd("ZREM").arg(self.workers_key()).arg(id).ignore();
        self.client.query_pipe::<()>(&pipe).await
    }

    /// The workers registered on this queue whose records have not expired,
    /// by id. A record that does not parse is skipped (another program's).
    pub async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        let ids: Vec<String> = self
            .client
            .query(redis::cmd("ZRANGE").arg(self.workers_key()).arg(0).arg(-1))
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("GET").arg(self.worker_key(id));
        }
        let records: Vec<Option<Vec<u8>>> = self.client.query_pipe(&pipe).await?;
        let mut out: Vec<WorkerRecord> = records
            .into_iter()
            .flatten()
            .filter_map(|r| serde_json::from_slice(&r).ok())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
