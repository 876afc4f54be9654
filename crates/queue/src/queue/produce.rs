//! Producers: enqueue, single and batch, checked whole before anything is sent.

use super::*;
use crate::JobId;

impl Queue {
    /// Enqueues one job and returns its id (the existing job's id when its dedup
    /// key or id is still live).
    pub async fn enqueue(
        &self,
        payload: impl Into<Vec<u8>>,
        options: crate::JobOptions,
    ) -> Result<JobId> {
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
    /// input order (with [`crate::ClientOptions::min_replicas`], once that many
    /// replicas have them). Every job is checked before any is sent. Each call is atomic;
    /// the batch as a whole is not, but retrying it is safe when the jobs carry
    /// ids ([`crate::JobOptions::id`]): existing ids are not enqueued twice.
    pub async fn enqueue_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        for job in &jobs {
            self.check_job(job)?;
        }
        self.register_if_due().await?;
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
        self.client.replicated().await?;
        Ok(ids)
    }

    async fn enqueue_chunk(&self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        let mut inv = self.invocation(&scripts::ENQUEUE);
        inv.arg(&*self.name).arg(jobs.len());
        for job in jobs {
            push_job_args(&mut inv, job);
        }
        self.invoke(&inv).await
    }

    /// Adds the queue's name to the index `spoolctl stats` and the console
    /// list, again every REGISTER_EVERY: a Redis restarted without
    /// persistence forgets it while the producer lives on.
    pub(super) async fn register_if_due(&self) -> Result<()> {
        let due = self
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|at| at.elapsed() >= REGISTER_EVERY);
        if due {
            let _: i64 = self
                .client
                .query(redis::cmd("SADD").arg(QUEUES_KEY).arg(&*self.name))
                .await?;
            *self.registered.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        Ok(())
    }
}

/// A job's 12 arguments to enqueue.lua and flow.lua, in their order.
pub(super) fn push_job_args(inv: &mut redis::ScriptInvocation<'_>, job: &NewJob) {
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
        .arg(o.dedup_key.as_deref().unwrap_or(""))
        .arg(o.timeout.map_or(0, |d| d.as_millis().max(1) as u64))
        .arg(match o.timeout_retry {
            None => "",
            Some(false) => "0",
            Some(true) => "1",
        });
}
