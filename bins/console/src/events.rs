//! Job event streams with one Redis reader per job, however many browsers
//! follow it: the first subscriber starts a poller that reads the job every
//! 250 ms into a `watch` channel; every subscriber's stream turns changes of
//! that channel into `progress` and `done` events; the poller stops when the
//! job ends or its last subscriber leaves.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use axum::response::sse::Event;
use spool_queue::{Error, JobInfo, JobState, Queue};
use tokio::sync::watch;

/// How often a poller reads its job.
const EVERY: Duration = Duration::from_millis(250);

/// What the poller last saw.
#[derive(Debug, Clone)]
pub(crate) enum Seen {
    Job(Box<JobInfo>),
    Gone,
}

/// The pollers, by queue and job id.
#[derive(Debug, Default)]
pub(crate) struct Hub {
    pollers: Mutex<HashMap<(String, String), watch::Receiver<Seen>>>,
}

fn finished(s: &Seen) -> bool {
    match s {
        Seen::Gone => true,
        Seen::Job(j) => matches!(
            j.state,
            JobState::Completed | JobState::Dead | JobState::Cancelled
        ),
    }
}

impl Hub {
    /// A receiver for `id`'s snapshots, starting its poller when none runs.
    pub(crate) fn subscribe(
        &self,
        queue: Queue,
        id: String,
        first: JobInfo,
    ) -> watch::Receiver<Seen> {
        let key = (queue.name().to_owned(), id.clone());
        let mut pollers = self.pollers.lock().unwrap_or_else(|p| p.into_inner());
        pollers.retain(|_, rx| rx.has_changed().is_ok());
        if let Some(rx) = pollers.get(&key) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(Seen::Job(Box::new(first)));
        pollers.insert(key, rx.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(EVERY).await;
                if tx.receiver_count() <= 1 {
                    // Only the hub's own copy is left: nobody listens.
                    break;
                }
                let seen = match queue.info(&id).await {
                    Ok(info) => Seen::Job(Box::new(info)),
                    Err(Error::NotFound { .. }) => Seen::Gone,
                    Err(e) => {
                        tracing::debug!(error = %e, "events: cannot read the job; retrying");
                        continue;
                    }
                };
                let end = finished(&seen);
                tx.send_replace(seen);
                if end {
                    break;
                }
            }
            // Dropping `tx` closes every subscriber's stream after its last
            // value, and marks this poller stale for the next subscribe.
        });
        rx
    }
}

/// One subscriber's events: `progress` when the progress value changes,
/// then `done` (the final job) or `gone`.
pub(crate) fn stream(
    rx: watch::Receiver<Seen>,
) -> impl futures::Stream<Item = Result<Event, Infallible>> {
    struct S {
        rx: watch::Receiver<Seen>,
        last: Option<serde_json::Value>,
        first: bool,
        done: bool,
    }
    let start = S {
        rx,
        last: None,
        first: true,
        done: false,
    };
    futures::stream::unfold(start, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            if !s.first && s.rx.changed().await.is_err() {
                // The poller stopped without a final value (it cannot: it
                // sends the end before leaving); end the stream.
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
                Seen::Job(job) => {
                    if finished(&Seen::Job(job.clone())) {
                        s.done = true;
                        let data = serde_json::to_string(&job).unwrap_or_default();
                        return Some((Ok(Event::default().event("done").data(data)), s));
                    }
                    if job.progress.is_some() && job.progress != s.last {
                        s.last = job.progress.clone();
                        let data = job
                            .progress
                            .as_ref()
                            .map(|p| p.to_string())
                            .unwrap_or_default();
                        return Some((Ok(Event::default().event("progress").data(data)), s));
                    }
                }
            }
        }
    })
}
