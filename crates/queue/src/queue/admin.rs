//! Operators: cancel, inspect, stats, dead letters, sweep and the
//! reconciling check.

use super::*;
use crate::JobId;

/// Backlog jobs one pause or resume script call moves.
const PAUSE_CHUNK: usize = 10_000;

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

impl Queue {
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

    /// Marks a job watched before waiting for its end over the queue's
    /// events stream (`spool:{q}:events`, docs/protocol.md, "Events"):
    /// from now on each of its events is written there, after the id this
    /// returns. Returns the job's state and that id; [`Error::NotFound`]
    /// when there is no such job. A job that has ended is not marked.
    pub async fn watch(&self, id: &str) -> Result<(JobState, String)> {
        let mut inv = self.invocation(&scripts::WATCH);
        inv.arg(id);
        let (state, last, _progress): (String, String, Vec<u8>) = self.invoke(&inv).await?;
        if state.is_empty() {
            return Err(self.not_found(id));
        }
        let state = state.parse::<JobState>().map_err(|reason| Error::Corrupt {
            key: self.keys.job(id),
            reason,
        })?;
        Ok((state, last))
    }

    /// A job's state and last progress, and nothing else (two fields, never
    /// the payload or result): what something that follows a job polls.
    /// [`Error::NotFound`] once the job is gone.
    pub async fn glance(&self, id: &str) -> Result<(JobState, Option<serde_json::Value>)> {
        let key = self.keys.job(id);
        let (state, progress): (Option<String>, Option<Vec<u8>>) = self
            .client
            .query(redis::cmd("HMGET").arg(&key).arg("state").arg("progress"))
            .await?;
        let Some(state) = state else {
            return Err(self.not_found(id));
        };
        let state = state.parse::<JobState>().map_err(|reason| Error::Corrupt {
            key: key.clone(),
            reason,
        })?;
        let progress = progress.filter(|p| !p.is_empty()).map(|p| {
            serde_json::from_slice(&p).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&p).into_owned())
            })
        });
        Ok((state, progress))
    }

    /// The depth of every state, read in one round trip of O(1) commands.
    pub async fn stats(&self) -> Result<QueueStats> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        for key in [&k.ready, &k.scheduled, &k.active] {
            pipe.cmd("ZCARD").arg(key);
        }
        pipe.cmd("SCARD").arg(&k.outstanding);
        for key in [&k.dead, &k.completed, &k.cancelled, &k.parked, &k.waiting] {
            pipe.cmd("ZCARD").arg(key);
        }
        pipe.cmd("EXISTS").arg(&k.paused);
        pipe.cmd("ZRANGE")
            .arg(&k.scheduled)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES");
        pipe.cmd("TIME");
        let mut conn = self.client.inner.conn.clone();
        let mut v: Vec<Value> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.client.err(e))?;
        let (Some(time), Some(first)) = (v.pop(), v.pop()) else {
            return Err(self.corrupt("stats", &Value::Nil));
        };
        let lateness_ms = lateness_ms(first, time);
        let Some(v) = v
            .into_iter()
            .map(|x| redis::from_redis_value::<u64>(x).ok())
            .collect::<Option<Vec<u64>>>()
        else {
            return Err(self.corrupt("stats", &Value::Nil));
        };
        let [
            ready,
            scheduled,
            active,
            outstanding,
            dead,
            completed,
            cancelled,
            parked,
            waiting,
            paused,
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
            paused: paused == 1,
            parked,
            waiting,
            lateness_ms,
        })
    }

    /// The queue's last 24 hours minute by minute, oldest first: only
    /// minutes in which something happened are listed. Counted by the
    /// scripts as jobs move (docs/protocol.md, `minutes`), whatever their
    /// retention, at two commands per reserve or settle call.
    pub async fn history(&self) -> Result<Vec<Minute>> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL")
            .arg(format!("{}minutes", self.keys.prefix));
        pipe.cmd("TIME");
        let mut conn = self.client.inner.conn.clone();
        let (slots, (secs, _micros)): (HashMap<String, String>, (u64, u64)) = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.client.err(e))?;
        let now_minute = secs / 60;
        let mut out: Vec<Minute> = slots
            .values()
            .filter_map(|v| Minute::parse(v))
            .filter(|m| {
                let minute = m.at_ms / 60_000;
                minute <= now_minute && now_minute - minute < HISTORY_MINUTES
            })
            .collect();
        out.sort_by_key(|m| m.at_ms);
        Ok(out)
    }

    /// Pauses the queue: nothing more is reserved, running jobs finish,
    /// enqueues are still accepted, and both keys KEDA reads (`ready`,
    /// `outstanding`) stop counting the backlog, which is held aside in
    /// order, so the fleet scales to zero once the running jobs end.
    /// Idempotent; the first pause's time is kept.
    pub async fn pause(&self) -> Result<PauseState> {
        loop {
            let s = self.pause_call("pause").await?;
            // Another caller resumed meanwhile, or the backlog is all held.
            if !s.paused || s.ready == 0 {
                return Ok(s);
            }
        }
    }

    /// Resumes a paused queue: the held backlog comes back in its order
    /// (priority, then FIFO) ahead of anything enqueued since at the same
    /// priority, and workers are woken. Idempotent.
    pub async fn resume(&self) -> Result<PauseState> {
        loop {
            let s = self.pause_call("resume").await?;
            if s.paused || s.parked == 0 {
                return Ok(s);
            }
        }
    }

    /// Whether the queue is paused, and how much it holds.
    pub async fn pause_state(&self) -> Result<PauseState> {
        self.pause_call("status").await
    }

    async fn pause_call(&self, action: &str) -> Result<PauseState> {
        let mut inv = self.invocation(&scripts::PAUSE);
        inv.arg(action).arg(PAUSE_CHUNK);
        let (paused, parked, ready, active, at): (u8, u64, u64, u64, u64) =
            self.invoke(&inv).await?;
        Ok(PauseState {
            paused: paused == 1,
            paused_at_ms: (at > 0).then_some(at),
            parked,
            ready,
            active,
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
        // Every index in one round trip (all keys share the queue's slot).
        let mut pipe = redis::pipe();
        for key in [&k.ready, &k.active, &k.scheduled, &k.parked, &k.waiting] {
            pipe.cmd("ZRANGE").arg(key).arg(0).arg(-1);
        }
        pipe.cmd("SMEMBERS").arg(&k.outstanding);
        let indexed: Vec<Vec<Vec<u8>>> = self.client.query_pipe(&pipe).await?;
        ids.extend(indexed.into_iter().flatten());
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
        let examined = ids.len();
        let mut findings = Vec::new();
        let mut found_ids: Vec<(Vec<u8>, bool)> = Vec::new();
        for chunk in ids.chunks(CHECK_CHUNK) {
            let mut inv = self.invocation(&scripts::CHECK);
            inv.arg("check");
            for id in chunk {
                inv.arg(&id[..]);
            }
            let found: Vec<String> = self.invoke(&inv).await?;
            for line in &found {
                // "<id>: <what>"; the id is whichever of this chunk's ids
                // the line starts with (ids may hold ": " themselves).
                if let Some(id) = chunk
                    .iter()
                    .filter(|id| {
                        line.as_bytes().starts_with(id)
                            && line.as_bytes()[id.len()..].starts_with(b": ")
                    })
                    .max_by_key(|id| id.len())
                {
                    found_ids.push((id.clone(), line[id.len()..].starts_with(": ready but")));
                }
            }
            findings.extend(found);
        }
        if repair && !found_ids.is_empty() {
            // A repaired ready job goes back to the front of the backlog;
            // repaired newest first, the oldest ends frontmost, so the
            // jobs keep their first-in, first-out order.
            let ready: Vec<&Vec<u8>> = found_ids
                .iter()
                .filter(|(_, r)| *r)
                .map(|(id, _)| id)
                .collect();
            let job_prefix = format!("{}job:", k.prefix).into_bytes();
            let mut pipe = redis::pipe();
            for id in &ready {
                pipe.cmd("HGET")
                    .arg([&job_prefix[..], &id[..]].concat())
                    .arg("enqueued_at");
            }
            let enqueued: Vec<Option<u64>> = if ready.is_empty() {
                Vec::new()
            } else {
                self.client
                    .query_pipe(pipe.ignore_errors())
                    .await
                    .unwrap_or_default()
            };
            let mut order: Vec<(Option<u64>, &Vec<u8>)> = enqueued
                .into_iter()
                .chain(std::iter::repeat(None))
                .zip(ready.iter().copied())
                .collect();
            order.sort_by(|a, b| b.cmp(a));
            let mut repair_ids: Vec<&Vec<u8>> = order.into_iter().map(|(_, id)| id).collect();
            repair_ids.extend(found_ids.iter().filter(|(_, r)| !*r).map(|(id, _)| id));
            findings.clear();
            for chunk in repair_ids.chunks(CHECK_CHUNK) {
                let mut inv = self.invocation(&scripts::CHECK);
                inv.arg("repair");
                for id in chunk {
                    inv.arg(&id[..]);
                }
                let found: Vec<String> = self.invoke(&inv).await?;
                findings.extend(found);
            }
        }
        Ok(CheckReport {
            queue: self.name.to_string(),
            examined,
            keys_scanned: scanned,
            findings,
            repaired: repair,
        })
    }

    /// Dead jobs, newest first. A job whose hash cannot be read is left
    /// out; [`Queue::jobs_page`] reports it.
    pub async fn dead_list(&self, offset: usize, limit: usize) -> Result<Vec<JobInfo>> {
        self.jobs_in(JobState::Dead, offset, limit).await
    }

    /// [`Queue::jobs_page`]'s readable jobs alone.
    pub async fn jobs_in(
        &self,
        state: JobState,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<JobInfo>> {
        Ok(self.jobs_page(state, offset, limit).await?.jobs)
    }

    /// A page of the jobs in `state`: `ready` in the order they will run,
    /// every other state newest first (by run-at, lease deadline, time of
    /// death or retention expiry). One round trip for the ids and one for
    /// the hashes, whatever the queue's size: O(page + offset).
    ///
    /// One job whose hash cannot be read (a field damaged by hand or by
    /// another tool) is reported in [`JobPage::unreadable`] and the page
    /// goes on: one bad job never hides the others from an operator.
    pub async fn jobs_page(&self, state: JobState, offset: usize, limit: usize) -> Result<JobPage> {
        let mut page = JobPage::default();
        if limit == 0 {
            return Ok(page);
        }
        let k = &self.keys;
        let (key, cmd) = match state {
            JobState::Ready => (&k.ready, "ZRANGE"),
            JobState::Scheduled => (&k.scheduled, "ZREVRANGE"),
            JobState::Active => (&k.active, "ZREVRANGE"),
            JobState::Dead => (&k.dead, "ZREVRANGE"),
            JobState::Completed => (&k.completed, "ZREVRANGE"),
            JobState::Cancelled => (&k.cancelled, "ZREVRANGE"),
            JobState::Waiting => (&k.waiting, "ZREVRANGE"),
        };
        let end = offset.saturating_add(limit - 1);
        let mut ids: Vec<String> = self
            .client
            .query(redis::cmd(cmd).arg(key).arg(offset).arg(end))
            .await?;
        if state == JobState::Ready && ids.len() < limit {
            // Ready jobs a paused queue holds come after the backlog, in
            // their run order too.
            let in_ready: usize = self.client.query(redis::cmd("ZCARD").arg(key)).await?;
            let from = (offset + ids.len()).saturating_sub(in_ready);
            let more: Vec<String> = self
                .client
                .query(
                    redis::cmd("ZRANGE")
                        .arg(&k.parked)
                        .arg(from)
                        .arg(from + (limit - ids.len()) - 1),
                )
                .await?;
            ids.extend(more);
        }
        page.ids_read = ids.len();
        if ids.is_empty() {
            // An empty pipeline is an error to Redis ("empty command").
            return Ok(page);
        }
        // One round trip for every hash, not one per job.
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(self.keys.job(id));
        }
        // Each hash on its own: a key of the wrong type fails its own read.
        let hashes: Vec<Value> = self.client.query_pipe(pipe.ignore_errors()).await?;
        for (id, h) in ids.iter().zip(hashes) {
            let key = self.keys.job(id);
            let h: HashMap<String, Vec<u8>> = match redis::from_redis_value(h) {
                Ok(h) => h,
                Err(e) => {
                    page.unreadable.push(Unreadable {
                        id: id.clone(),
                        reason: format!("{key} cannot be read as a job hash: {e}"),
                    });
                    continue;
                }
            };
            // Purged or expired between the two reads: nothing to show.
            if h.is_empty() {
                continue;
            }
            match JobInfo::from_hash(&key, &self.name, h) {
                Ok(job) => page.jobs.push(job),
                Err(e) => page.unreadable.push(Unreadable {
                    id: id.clone(),
                    reason: e.to_string(),
                }),
            }
        }
        Ok(page)
    }

    /// Puts dead jobs back in the backlog with fresh attempts: the given ids, or
    /// when `ids` is empty the oldest `limit`. Returns how many moved.
    pub async fn dead_retry(&self, ids: &[JobId], limit: usize) -> Result<u64> {
        self.dead_action("retry", ids, limit).await
    }

    /// Deletes dead jobs: the given ids, or when `ids` is empty the oldest
    /// `limit`. Returns how many were deleted.
    pub async fn dead_purge(&self, ids: &[JobId], limit: usize) -> Result<u64> {
        self.dead_action("purge", ids, limit).await
    }

    async fn dead_action(&self, action: &str, ids: &[JobId], limit: usize) -> Result<u64> {
        let mut inv = self.invocation(&scripts::DEAD);
        inv.arg(action).arg(limit.max(1));
        for id in ids {
            inv.arg(id.as_str());
        }
        self.invoke(&inv).await
    }

    /// Promotes due scheduled jobs, recovers expired leases and prunes retention
    /// indexes, up to `limit` of each. Any worker may run it at any time.
    pub async fn sweep(&self, limit: usize) -> Result<SweepReport> {
        let mut inv = self.invocation(&scripts::SWEEP);
        inv.arg(limit.max(1));
        let (promoted, recovered, pruned, lateness_ms, next_due): (u64, u64, u64, u64, i64) =
            self.invoke(&inv).await?;
        Ok(SweepReport {
            promoted,
            recovered,
            pruned,
            lateness_ms,
            next_due_in_ms: u64::try_from(next_due).ok(),
        })
    }
}

/// How late the first entry of `scheduled` (`ZRANGE … 0 0 WITHSCORES`) is at
/// the server's `TIME`, in ms; 0 when it is not due yet or there is none.
fn lateness_ms(first: Value, time: Value) -> u64 {
    let run_at: Option<f64> = match first {
        Value::Array(mut a) if a.len() == 2 => {
            a.pop().and_then(|s| redis::from_redis_value(s).ok())
        }
        _ => None,
    };
    let now: Option<(u64, u64)> = redis::from_redis_value(time).ok();
    match (run_at, now) {
        (Some(run_at), Some((s, us))) => {
            let now_ms = s.saturating_mul(1000) + us / 1000;
            now_ms.saturating_sub(run_at.max(0.0) as u64)
        }
        _ => 0,
    }
}
