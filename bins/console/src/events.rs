//! Job event streams with one Redis reader per job, however many browsers
//! follow it: the first subscriber starts a poller that reads the job's
//! state and progress (two fields, never the payload) every 250 ms into a
//! `watch` channel, and the whole job once when it ends; every subscriber's
//! stream turns changes of that channel into `progress` and `done` events;
//! the poller stops when the job ends or its last subscriber leaves.
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

/// How often a poller reads its job.
const EVERY: Duration = Duration::from_millis(250);
/// Open event streams one caller may hold.
pub(crate) const MAX_STREAMS_PER_CALLER: usize = 32;
/// Jobs followed at once, over every caller (each one poller).
pub(crate) const MAX_JOBS_FOLLOWED: usize = 1000;

/// What the poller last saw.
#[derive(Debug, Clone)]
pub(crate) enum Seen {
    /// Still running: its state and last progress.
    Running(Option<serde_json::Value>),
    /// Ended: the whole job.
    Done(Box<JobInfo>),
    Gone,
}

/// The pollers, by queue and job id, and the open streams by caller.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    pollers: Mutex<HashMap<(String, String), watch::Receiver<Seen>>>,
    streams: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream, counted against its caller until dropped.
pub(crate) struct Ticket {
    caller: String,
    streams: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = s.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.remove(&self.caller);
            }
        }
    }
}

fn ended(state: JobState) -> bool {
    matches!(
        state,
        JobState::Completed | JobState::Dead | JobState::Cancelled
    )
}

impl Hub {
    /// A receiver for `id`'s snapshots, starting its poller when none runs,
    /// and the caller's ticket; 429 past a cap.
    pub(crate) fn subscribe(
        &self,
        caller: &str,
        queue: Queue,
        id: String,
        first: JobInfo,
    ) -> Result<(watch::Receiver<Seen>, Ticket), ApiError> {
        let ticket = {
            let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
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
        let key = (queue.name().to_owned(), id.clone());
        let mut pollers = self.pollers.lock().unwrap_or_else(|p| p.into_inner());
        pollers.retain(|_, rx| rx.has_changed().is_ok());
        if let Some(rx) = pollers.get(&key) {
            return Ok((rx.clone(), ticket));
        }
        if pollers.len() >= MAX_JOBS_FOLLOWED {
            return Err(ApiError::new(
                429,
                "too_many_streams",
                format!("the console follows {MAX_JOBS_FOLLOWED} jobs already: try again later"),
            ));
        }
        let start = if ended(first.state) {
            Seen::Done(Box::new(first))
        } else {
            Seen::Running(first.progress)
        };
        let done = matches!(start, Seen::Done(_));
        let (tx, rx) = watch::channel(start);
        if done {
            // Nothing to poll: the one value is the end.
            return Ok((rx, ticket));
        }
        pollers.insert(key, rx.clone());
        tokio::spawn(poll(queue, id, tx));
        Ok((rx, ticket))
    }
}

/// Reads the job's state and progress until it ends or nobody listens.
async fn poll(queue: Queue, id: String, tx: watch::Sender<Seen>) {
    loop {
        tokio::time::sleep(EVERY).await;
        if tx.receiver_count() <= 1 {
            // Only the hub's own copy is left: nobody listens.
            break;
        }
        let seen = match queue.glance(&id).await {
            Ok((state, _)) if ended(state) => match queue.info(&id).await {
                Ok(info) => Seen::Done(Box::new(info)),
                Err(Error::NotFound { .. }) => Seen::Gone,
                Err(e) => {
                    tracing::debug!(error = %e, "events: cannot read the job; retrying");
                    continue;
                }
            },
            Ok((_, progress)) => Seen::Running(progress),
            Err(Error::NotFound { .. }) => Seen::Gone,
            Err(e) => {
                tracing::debug!(error = %e, "events: cannot read the job; retrying");
                continue;
            }
        };
        let end = !matches!(seen, Seen::Running(_));
        // Only a change wakes the streams.
        tx.send_if_modified(|old| {
            let changed = match (&*old, &seen) {
                (Seen::Running(a), Seen::Running(b)) => a != b,
                _ => true,
            };
            if changed {
                *old = seen;
            }
            changed
        });
        if end {
            break;
        }
    }
    // Dropping `tx` closes every subscriber's stream after its last value,
    // and marks this poller stale for the next subscribe.
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
                // The poller stopped (nobody else listened, or the console
                // is shutting down): end the stream; the page reconnects.
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
