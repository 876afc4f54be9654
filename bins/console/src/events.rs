//! Job event streams fed by the queue's events stream (docs/protocol.md,
//! "Events"), not by polling: a followed job is marked watched
//! ([`Queue::watch`]), and one reader per queue (`XREAD BLOCK` on a
//! connection of its own) hands each event to the job's `watch` channel,
//! which every browser following that job shares. When the stream is quiet
//! for 2 s the reader glances at each followed job (`state` and `progress`,
//! never the payload), in case an event was lost (a Redis restart without
//! persistence) or the workers predate events (protocol 1). A job's
//! follower goes when the job ends or its last subscriber leaves; a reader
//! when its queue has no followers.
//!
//! Bounded: at most [`MAX_STREAMS_PER_CALLER`] open streams per caller (a
//! session, a token, or the local user) and [`MAX_JOBS_FOLLOWED`] jobs
//! followed in all; past either the subscribe is refused with 429.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::Event;
use spool_queue::{Error, JobInfo, JobState, Queue};
use tokio::sync::watch;

use crate::api::ApiError;

/// How long one read of the events stream waits before the reader glances
/// at its jobs.
const QUIET: Duration = Duration::from_secs(2);
/// Open event streams one caller may hold.
pub(crate) const MAX_STREAMS_PER_CALLER: usize = 32;
/// Jobs followed at once, over every caller.
pub(crate) const MAX_JOBS_FOLLOWED: usize = 1000;

/// What the follower last saw.
#[derive(Debug, Clone)]
pub(crate) enum Seen {
    /// Still running: its last progress.
    Running(Option<serde_json::Value>),
    /// Ended: the whole job.
    Done(Box<JobInfo>),
    Gone,
}

/// One queue's followed jobs, by id (the sender every subscriber's receiver
/// hangs off), and whether its reader runs.
#[derive(Debug, Default)]
struct Follow {
    jobs: HashMap<String, watch::Sender<Seen>>,
    reading: bool,
}

type Shared = Arc<Mutex<Follow>>;

/// The followed jobs by queue, and the open streams by caller.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    queues: Mutex<HashMap<String, Shared>>,
    streams: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream, counted against its caller until dropped.
pub(crate) struct Ticket {
    caller: String,
    streams: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = lock(&self.streams);
        if let Some(n) = s.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.remove(&self.caller);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ended(state: JobState) -> bool {
    matches!(
        state,
        JobState::Completed | JobState::Dead | JobState::Cancelled
    )
}

impl Hub {
    /// A receiver for `id`'s snapshots, following the job when nobody does
    /// yet, and the caller's ticket; 429 past a cap.
    pub(crate) async fn subscribe(
        &self,
        caller: &str,
        queue: Queue,
        id: String,
        first: JobInfo,
    ) -> Result<(watch::Receiver<Seen>, Ticket), ApiError> {
        let ticket = {
            let mut streams = lock(&self.streams);
            let n = streams.entry(caller.to_owned()).or_default();
            if *n >= MAX_STREAMS_PER_CALLER {
                return Err(ApiError::new(
                    429,
                    "too_many_streams",
                    format!(
                        "{MAX_STREAMS_PER_CALLER} event streams are open for you already: close one first"
                    ),
                ));
            }
            *n += 1;
            Ticket {
                caller: caller.to_owned(),
                streams: self.streams.clone(),
            }
        };
        if ended(first.state) {
            // Nothing to follow: the one value is the end.
            let (_tx, rx) = watch::channel(Seen::Done(Box::new(first)));
            return Ok((rx, ticket));
        }
        let (shared, rx, start) = {
            let mut queues = lock(&self.queues);
            let total: usize = queues.values().map(|f| lock(f).jobs.len()).sum();
            let shared = queues.entry(queue.name().to_owned()).or_default().clone();
            let mut f = lock(&shared);
            f.jobs.retain(|_, tx| tx.receiver_count() > 0);
            if let Some(tx) = f.jobs.get(&id) {
                return Ok((tx.subscribe(), ticket));
            }
            if total >= MAX_JOBS_FOLLOWED {
                return Err(ApiError::new(
                    429,
                    "too_many_streams",
                    format!(
                        "the console follows {MAX_JOBS_FOLLOWED} jobs already: try again later"
                    ),
                ));
            }
            let (tx, rx) = watch::channel(Seen::Running(first.progress));
            f.jobs.insert(id.clone(), tx);
            let start = !f.reading;
            f.reading = true;
            drop(f);
            (shared, rx, start)
        };
        // Registered before the watch: every event after it reaches the
        // follower; a job that ended in between shows in the watch's answer.
        let mut pos = "0-0".to_owned();
        match queue.watch(&id).await {
            Ok((state, last)) => {
                pos = last;
                if ended(state) {
                    finish(&queue, &shared, &id).await;
                }
            }
            Err(Error::NotFound { .. }) => {
                if let Some(tx) = lock(&shared).jobs.remove(&id) {
                    tx.send_replace(Seen::Gone);
                }
            }
            // The reader's glances catch the job's end.
            Err(e) => tracing::debug!(error = %e, "events: cannot mark the job watched"),
        }
        if start {
            tokio::spawn(read(queue, shared, pos));
        }
        Ok((rx, ticket))
    }
}

/// Reads the job whole and ends its followers with it.
async fn finish(queue: &Queue, shared: &Shared, id: &str) {
    let seen = match queue.info(id).await {
        Ok(info) => Seen::Done(Box::new(info)),
        Err(Error::NotFound { .. }) => Seen::Gone,
        Err(e) => {
            tracing::debug!(error = %e, "events: cannot read the ended job; later");
            return;
        }
    };
    if let Some(tx) = lock(shared).jobs.remove(id) {
        tx.send_replace(seen);
    }
}

/// A running job's progress, sent only when it changed.
fn progressed(shared: &Shared, id: &str, progress: Option<serde_json::Value>) {
    if let Some(tx) = lock(shared).jobs.get(id) {
        tx.send_if_modified(|old| {
            let changed = !matches!(old, Seen::Running(p) if *p == progress);
            if changed {
                *old = Seen::Running(progress);
            }
            changed
        });
    }
}

/// One queue's reader: hands the stream's events to the followed jobs until
/// none is left.
async fn read(queue: Queue, shared: Shared, mut pos: String) {
    loop {
        {
            let mut f = lock(&shared);
            f.jobs.retain(|_, tx| tx.receiver_count() > 0);
            if f.jobs.is_empty() {
                // Under the lock a subscribe checks `reading` under: the
                // next follower starts a new reader.
                f.reading = false;
                return;
            }
        }
        let asked = tokio::time::Instant::now();
        let events = match queue.read_events(&pos, QUIET, 500).await {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, "events: cannot read the stream; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        for ev in &events {
            pos.clone_from(&ev.id);
            if !lock(&shared).jobs.contains_key(&ev.job) {
                continue;
            }
            if ev.is_end() {
                finish(&queue, &shared, &ev.job).await;
            } else if ev.event == "progress" {
                progressed(&shared, &ev.job, ev.data.clone());
            }
        }
        if events.is_empty() {
            if asked.elapsed() < QUIET / 4 {
                // No blocking connection was free, so the read did not
                // wait: pace the glances as the old poller did.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            // Quiet: glance at each followed job (two fields).
            let ids: Vec<String> = lock(&shared).jobs.keys().cloned().collect();
            for id in ids {
                match queue.glance(&id).await {
                    Ok((state, _)) if ended(state) => finish(&queue, &shared, &id).await,
                    Ok((_, progress)) => progressed(&shared, &id, progress),
                    Err(Error::NotFound { .. }) => {
                        if let Some(tx) = lock(&shared).jobs.remove(&id) {
                            tx.send_replace(Seen::Gone);
                        }
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

/// One subscriber's events: `progress` when the progress value changes,
/// then `done` (the final job, without its log) or `gone`.
pub(crate) fn stream(
    rx: watch::Receiver<Seen>,
    ticket: Ticket,
) -> impl futures::Stream<Item = Result<Event, Infallible>> {
    struct S {
        rx: watch::Receiver<Seen>,
        last: Option<serde_json::Value>,
        first: bool,
        done: bool,
        _ticket: Ticket,
    }
    let start = S {
        rx,
        last: None,
        first: true,
        done: false,
        _ticket: ticket,
    };
    futures::stream::unfold(start, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            if !s.first && s.rx.changed().await.is_err() {
                // The follower is gone without an end (the console is
                // shutting down): end the stream; the page reconnects.
                return None;
            }
            s.first = false;
            let seen = s.rx.borrow_and_update().clone();
            match seen {
                Seen::Gone => {
                    s.done = true;
                    let data =
                        serde_json::json!({ "error": "the job is gone (expired or purged)" });
                    return Some((Ok(Event::default().event("gone").data(data.to_string())), s));
                }
                Seen::Done(job) => {
                    s.done = true;
                    let data = serde_json::to_string(&job).unwrap_or_default();
                    return Some((Ok(Event::default().event("done").data(data)), s));
                }
                Seen::Running(progress) => {
                    if progress.is_some() && progress != s.last {
                        s.last = progress.clone();
                        let data = progress.as_ref().map(|p| p.to_string()).unwrap_or_default();
                        return Some((Ok(Event::default().event("progress").data(data)), s));
                    }
                }
            }
        }
    })
}
