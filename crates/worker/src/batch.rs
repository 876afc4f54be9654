//! Group commit, shared by the settle and beat batchers (`settler.rs`,
//! `beater.rs`): job tasks hand requests to one task, which serves every
//! request waiting in one call and hands each its answer. Under load this
//! turns a round trip and a script call per job into one per batch; when
//! idle it adds nothing (a lone request goes out at once).

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

type Entry<Q, A> = (Q, oneshot::Sender<A>);

/// The handle job tasks send requests `Q` through, each answered with an `A`.
pub(crate) struct Batcher<Q, A> {
    tx: mpsc::UnboundedSender<Entry<Q, A>>,
}

impl<Q, A> Clone for Batcher<Q, A> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
        }
    }
}

impl<Q: Send + 'static, A: Send + 'static> Batcher<Q, A> {
    /// Starts the serving task; it ends when every handle is dropped. `serve`
    /// answers a batch of at most `max` requests, one answer each, in order.
    /// With `gather`, the task lets the other tasks that are ready run once
    /// before it takes a batch, so requests due at the same instant (timers
    /// on one grid) join it.
    pub(crate) fn start<S, F>(max: usize, gather: bool, mut serve: S) -> Self
    where
        S: FnMut(Vec<Q>) -> F + Send + 'static,
        F: Future<Output = Vec<A>> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Entry<Q, A>>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max);
            while rx.recv_many(&mut batch, max).await > 0 {
                if gather {
                    tokio::task::yield_now().await;
                    while batch.len() < max {
                        match rx.try_recv() {
                            Ok(e) => batch.push(e),
                            Err(_) => break,
                        }
                    }
                }
                let (requests, replies): (Vec<Q>, Vec<_>) = batch.drain(..).unzip();
                for (reply, answer) in replies.into_iter().zip(serve(requests).await) {
                    let _ = reply.send(answer);
                }
            }
        });
        Batcher { tx }
    }

    /// Sends one request and waits for its answer; `None` when the serving
    /// task has stopped.
    pub(crate) async fn call(&self, request: Q) -> Option<A> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((request, reply)).ok()?;
        answer.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_waiting_together_are_served_in_one_call_in_order() {
        let (calls_tx, mut calls) = mpsc::unbounded_channel();
        let b = Batcher::start(8, true, move |reqs: Vec<u32>| {
            let calls_tx = calls_tx.clone();
            async move {
                let _ = calls_tx.send(reqs.len());
                reqs.into_iter().map(|r| r * 10).collect::<Vec<_>>()
            }
        });
        let (x, y, z) = tokio::join!(b.call(1), b.call(2), b.call(3));
        assert_eq!((x, y, z), (Some(10), Some(20), Some(30)));
        assert_eq!(calls.recv().await, Some(3), "one call served all three");
    }
}
