//! Consumers: reserve with a lease, heartbeat, settle (complete, fail, release),
//! and the decoding of the reserve script's reply.

use super::*;
use crate::JobId;

impl Queue {
    /// Leases up to `max` jobs, waiting up to `wait` for the first one without
    /// polling: an idle consumer sends about two commands a second, and a job
    /// enqueued while it waits reaches it within milliseconds. Returns an empty
    /// list when `wait` passes with nothing to do.
    pub async fn reserve(&self, max: usize, wait: Duration) -> Result<Vec<ReservedJob>> {
        let until = Instant::now() + wait;
        loop {
            let Reservation {
                jobs,
                next_due: hint,
            } = self.try_reserve(max).await?;
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

    /// One reserve script call, without waiting: the jobs leased and, when
    /// none, how long until something becomes due.
    pub async fn try_reserve(&self, max: usize) -> Result<Reservation> {
        // 64 random bits fence a lease as well as 128, and the token is
        // written with every job leased (its `lease` field).
        let token = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
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
        let next_due = u64::try_from(*hint).ok().map(Duration::from_millis);
        Ok(Reservation { jobs, next_due })
    }

    fn decode_reserved(&self, row: &Value) -> Result<ReservedJob> {
        decode_reserved_row(row).ok_or_else(|| self.corrupt("reserve", row))
    }

    async fn wait_for_wake(&self, block: Duration) -> Result<()> {
        let pool = &self.client.inner.blocking;
        let Some(mut lease) = pool.get(block, self.client.addr()).await? else {
            // Every blocking connection stayed busy: the caller polls.
            return Ok(());
        };
        let reply: redis::RedisResult<Value> = redis::cmd("BLPOP")
            .arg(&self.keys.wake)
            .arg(block.as_secs_f64())
            .query_async(&mut lease)
            .await;
        pool.put(lease, reply.is_ok());
        reply.map(drop).map_err(|e| self.client.err(e))
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
        let mut out = self.heartbeat_many(&[(job, progress)], extend).await?;
        out.pop()
            .unwrap_or_else(|| Err(self.corrupt("heartbeat", &Value::Array(Vec::new()))))
    }

    /// Beats many leased jobs in one script call (a thousand per call), each
    /// with its progress when given, extending each lease by `extend` or by
    /// the job's own lease duration. Each entry gets its own answer, in
    /// order: the new deadline, or [`Error::LeaseLost`] / [`Error::NotFound`]
    /// for a job that is no longer this consumer's. A worker beats all of its
    /// jobs that are due at once this way: a beat's Redis cost is mostly the
    /// request, which the batch pays once.
    pub async fn heartbeat_many(
        &self,
        beats: &[(&ReservedJob, Option<&str>)],
        extend: Option<Duration>,
    ) -> Result<Vec<Result<Heartbeat>>> {
        let ext = extend.map_or(0, |d| d.as_millis() as u64);
        let mut out = Vec::with_capacity(beats.len());
        for chunk in beats.chunks(SETTLE_CHUNK) {
            let mut inv = self.invocation(&scripts::HEARTBEAT);
            inv.arg(ext).arg(chunk.len());
            for (job, progress) in chunk {
                inv.arg(&job.id).arg(&job.token).arg(progress.unwrap_or(""));
            }
            let reply: Value = self.invoke(&inv).await?;
            let Value::Array(entries) = &reply else {
                return Err(self.corrupt("heartbeat", &reply));
            };
            if entries.len() != chunk.len() {
                return Err(self.corrupt("heartbeat", &reply));
            }
            for ((job, _), entry) in chunk.iter().zip(entries) {
                out.push(self.decode_beat(&job.id, entry));
            }
        }
        Ok(out)
    }

    fn decode_beat(&self, id: &str, entry: &Value) -> Result<Heartbeat> {
        let Value::Array(f) = entry else {
            return Err(self.corrupt("heartbeat", entry));
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
                id: id.to_owned(),
                state: String::from_redis_value(state.clone()).unwrap_or_default(),
            }),
            (Some("not_found"), _, _) => Err(self.not_found(id)),
            _ => Err(self.corrupt("heartbeat", entry)),
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

    /// Records a failure that may pass: retried after a backoff (state
    /// `scheduled`) while attempts remain, else `dead`.
    pub async fn fail(&self, job: &ReservedJob, error: &str) -> Result<JobState> {
        self.settle(job, Settle::Retry(error.to_owned())).await
    }

    /// Records a failure no retry can fix: `dead` at once.
    pub async fn fail_permanently(&self, job: &ReservedJob, error: &str) -> Result<JobState> {
        self.settle(job, Settle::Dead(error.to_owned())).await
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
        let (out, replicated) = self.settle_many_applied(items).await?;
        replicated?;
        Ok(out)
    }

    /// [`Queue::settle_many`] that keeps what Redis applied apart from whether
    /// it was replicated: the per-job outcomes, and separately
    /// [`Error::NotReplicated`] when `min_replicas` replicas did not confirm
    /// them in time. A worker uses it to tell "settled, replication not
    /// confirmed" (the job is done; a failover now could undo it) from "not
    /// settled" (retry), instead of retrying a settle that already happened
    /// until its lease runs out.
    pub async fn settle_many_applied(
        &self,
        items: Vec<(&ReservedJob, Settle)>,
    ) -> Result<(Vec<Result<JobState>>, Result<()>)> {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(SETTLE_CHUNK) {
            let mut inv = self.invocation(&scripts::SETTLE);
            inv.arg(chunk.len());
            for (job, how) in chunk {
                inv.arg(&job.id).arg(&job.token);
                match how {
                    Settle::Complete(result) => inv.arg("complete").arg(&result[..]).arg(0),
                    Settle::Dead(error) => inv.arg("dead").arg(error).arg(0),
                    Settle::Retry(error) => {
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
        let replicated = self.client.replicated().await;
        Ok((out, replicated))
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

    pub(super) fn not_found(&self, id: &str) -> Error {
        Error::NotFound {
            queue: self.name.to_string(),
            id: id.to_owned(),
        }
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
        reserved_at: std::time::Instant::now(),
        id: JobId::from(text(0)?),
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
        // Absent from replies of scripts older than the time-limit options.
        timeout: int(12).filter(|&t| t > 0).map(ms),
        timeout_retry: match int(13) {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        // Absent from replies of scripts older than flows.
        children: int(14).map_or(0, |n| n.clamp(0, u32::MAX as i64) as u32),
    })
}
