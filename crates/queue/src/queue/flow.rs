//! Flows: a parent job that runs once each of its children has ended
//! (docs/protocol.md, "Flows").

use serde::{Deserialize, Serialize};

use super::produce::push_job_args;
use super::*;
use crate::JobId;

/// What a child that dies, or is cancelled, does to its waiting parent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChildFailure {
    /// The parent is dead at once, naming the child and its error; its
    /// other live children are cancelled. Retrying the child (or the parent)
    /// from the dead letters revives the flow.
    #[default]
    Fail,
    /// The parent runs when every child has ended, and reads which failed
    /// ([`FlowChild::error`]).
    Continue,
}

impl ChildFailure {
    /// The name used in Redis and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildFailure::Fail => "fail",
            ChildFailure::Continue => "continue",
        }
    }
}

/// A flow to enqueue with [`Queue::enqueue_flow`]: a job, and the children
/// it waits for, each of which may be a flow itself. Children are ordinary
/// jobs: their own priority, delay, retries, time limits, dedup key and log,
/// in their parent's queue unless [`Flow::in_queue`] names another (encode
/// on the GPU queue, join on a CPU queue; a single Redis server or Sentinel
/// only, see there).
///
/// ```no_run
/// # async fn demo(queue: spool_queue::Queue) -> spool_queue::Result<()> {
/// use spool_queue::{ChildFailure, Flow, JobOptions, NewJob};
///
/// let join = NewJob::with_options(r#"{"join":"out/movie.mp4"}"#, JobOptions::default().id("movie-42"));
/// let flow = Flow::new(join)
///     .on_child_failure(ChildFailure::Fail)
///     .child(NewJob::new(r#"{"part":1}"#))
///     .child(NewJob::new(r#"{"part":2}"#));
/// let ids = queue.enqueue_flow(&flow).await?; // "movie-42", then the parts
/// assert_eq!(ids.len(), 3);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Flow {
    /// The job that runs once its children have ended.
    pub job: NewJob,
    /// What a child that fails does to this job (when it has children).
    pub on_child_failure: ChildFailure,
    /// The children, in document order.
    pub children: Vec<Flow>,
    /// The queue this job goes to; `None`: its parent's (the root: the
    /// queue [`Queue::enqueue_flow`] is called on).
    pub queue: Option<String>,
}

/// Deepest nesting a flow may have (the scripts refuse deeper ones).
pub const MAX_FLOW_DEPTH: usize = 32;

impl Flow {
    /// A flow of one job, without children yet.
    pub fn new(job: NewJob) -> Self {
        Flow {
            job,
            on_child_failure: ChildFailure::default(),
            children: Vec::new(),
            queue: None,
        }
    }

    /// Puts this job (and, unless they say otherwise, its children) in
    /// queue `name` instead of its parent's. A flow spanning queues needs a
    /// single Redis server or Sentinel: on Redis Cluster each queue lives in
    /// its own hash slot, no script can change two atomically, and
    /// [`Queue::enqueue_flow`] refuses it before sending anything.
    pub fn in_queue(mut self, name: impl Into<String>) -> Self {
        self.queue = Some(name.into());
        self
    }

    /// Adds a child.
    pub fn child(mut self, child: impl Into<Flow>) -> Self {
        self.children.push(child.into());
        self
    }

    /// Sets the policy for children that fail.
    pub fn on_child_failure(mut self, policy: ChildFailure) -> Self {
        self.on_child_failure = policy;
        self
    }

    /// The jobs in the flow, this one included.
    pub fn len(&self) -> usize {
        1 + self.children.iter().map(Flow::len).sum::<usize>()
    }

    /// Always false: a flow holds at least its own job.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Every node with its parent's index (0 for the root; otherwise the
    /// parent's position from 1) and its queue, in document order (depth
    /// first).
    fn flatten<'a>(
        &'a self,
        parent: usize,
        queue: &'a str,
        depth: usize,
        out: &mut Vec<(&'a Flow, usize, &'a str)>,
    ) -> Result<()> {
        if depth > MAX_FLOW_DEPTH {
            return Err(Error::InvalidOption {
                field: "flow",
                reason: format!("flows nest at most {MAX_FLOW_DEPTH} levels"),
            });
        }
        let queue = self.queue.as_deref().unwrap_or(queue);
        out.push((self, parent, queue));
        let me = out.len();
        for c in &self.children {
            c.flatten(me, queue, depth + 1, out)?;
        }
        Ok(())
    }
}

impl From<NewJob> for Flow {
    fn from(job: NewJob) -> Self {
        Flow::new(job)
    }
}

/// One child of a flow's parent, as [`Queue::children`] reads it.
#[derive(Debug, Clone, Serialize)]
pub struct FlowChild {
    /// The child's id.
    pub id: JobId,
    /// Its state now; `None` once its hash is gone (its own retention
    /// ended): a completed child's result stays in `result` until the
    /// parent's hash goes.
    pub state: Option<JobState>,
    /// Its result, once it completed (JSON when the worker sent JSON).
    pub result: Option<serde_json::Value>,
    /// Why it failed, once it died or was cancelled ("cancelled").
    pub error: Option<String>,
    /// Its queue, when it is not its parent's.
    pub queue: Option<String>,
    /// How many children it has itself (a nested flow's parent); 0 otherwise.
    pub child_count: u32,
}

impl FlowChild {
    /// Whether the child completed.
    pub fn completed(&self) -> bool {
        self.result.is_some()
    }
}

/// A parent's children list, results and failures, as read.
type FlowKeys = (
    Vec<String>,
    HashMap<String, Vec<u8>>,
    HashMap<String, String>,
);

impl Queue {
    /// Enqueues a flow in one script call, all of it or nothing: the parent
    /// waits (state `waiting`, not reservable and not outstanding work)
    /// until each child has ended, then runs like any job. Returns the ids
    /// in document order, the parent's first. Idempotent when the root has
    /// an id (or a dedup key): a flow whose root exists is not enqueued
    /// again, and its ids come back. Children must be new jobs: a child whose
    /// id exists, or whose dedup key a live job holds, refuses the call.
    pub async fn enqueue_flow(&self, flow: &Flow) -> Result<Vec<JobId>> {
        let mut nodes = Vec::with_capacity(flow.len());
        if flow.queue.as_deref().is_some_and(|q| q != &*self.name) {
            return Err(Error::InvalidOption {
                field: "flow",
                reason: format!(
                    "the root is in queue {:?}: enqueue the flow on that queue",
                    flow.queue.as_deref().unwrap_or_default()
                ),
            });
        }
        flow.flatten(0, &self.name, 0, &mut nodes)?;
        let spans = nodes.iter().any(|(_, _, q)| *q != &*self.name);
        for (_, _, q) in &nodes {
            crate::Keys::new(q)?;
        }
        if spans && self.client.inner.endpoint.is_cluster() {
            return Err(Error::InvalidOption {
                field: "flow",
                reason: "its jobs span queues, which Redis Cluster cannot change in one script \
                         (each queue is its own hash slot): put the flow in one queue, or use a \
                         single server or Sentinel"
                    .into(),
            });
        }
        if nodes.len() > MAX_BATCH {
            return Err(Error::InvalidOption {
                field: "flow",
                reason: format!("{} jobs; one flow holds at most {MAX_BATCH}", nodes.len()),
            });
        }
        for (node, _, _) in &nodes {
            self.check_job(&node.job)?;
        }
        self.register_if_due().await?;
        let mut inv = self.invocation(&scripts::FLOW);
        inv.arg(&*self.name).arg(nodes.len());
        for (node, parent, queue) in &nodes {
            push_job_args(&mut inv, &node.job);
            inv.arg(*parent).arg(node.on_child_failure.as_str());
            inv.arg(if *queue == &*self.name { "" } else { *queue });
        }
        let ids: Vec<JobId> = self.invoke(&inv).await?;
        if ids.len() != nodes.len() {
            return Err(Error::InvalidOption {
                field: "flow",
                reason: format!(
                    "a flow with root {} exists already with {} jobs, not {}: give a new flow a new root id",
                    ids.first().map_or("?", |id| id.as_str()),
                    ids.len(),
                    nodes.len()
                ),
            });
        }
        self.client.replicated().await?;
        Ok(ids)
    }

    /// The children of parent `id`, in document order, with what each
    /// left: the results and errors are kept until the parent's own hash
    /// goes, whatever the children's retention. Empty for a job without
    /// children. Two round trips.
    pub async fn children(&self, id: &str) -> Result<Vec<FlowChild>> {
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.cmd("LRANGE").arg(k.children(id)).arg(0).arg(-1);
        pipe.cmd("HGETALL").arg(k.results(id));
        pipe.cmd("HGETALL").arg(k.failures(id));
        let (list, mut results, mut failures): FlowKeys = self.client.query_pipe(&pipe).await?;
        if list.is_empty() {
            return Ok(Vec::new());
        }
        // An entry "<queue> <id>" is a child of another queue.
        let entries: Vec<(Option<String>, String)> = list
            .iter()
            .map(|e| match e.split_once(' ') {
                Some((q, id)) => (Some(q.to_owned()), id.to_owned()),
                None => (None, e.clone()),
            })
            .collect();
        let mut pipe = redis::pipe();
        for (q, c) in &entries {
            let key = match q {
                Some(q) => format!("spool:{{{q}}}:job:{c}"),
                None => k.job(c),
            };
            pipe.cmd("HMGET").arg(key).arg("state").arg("kids");
        }
        let states: Vec<Value> = self.client.query_pipe(pipe.ignore_errors()).await?;
        Ok(list
            .into_iter()
            .zip(entries)
            .zip(states)
            .map(|((entry, (queue, c)), fields)| {
                let (state, kids) =
                    redis::from_redis_value::<(Option<String>, Option<String>)>(fields)
                        .unwrap_or_default();
                let state = state.and_then(|s| s.parse::<JobState>().ok());
                let child_count = kids.and_then(|k| k.parse().ok()).unwrap_or(0);
                let result = results.remove(&entry).map(|v| {
                    serde_json::from_slice(&v).unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(&v).into_owned())
                    })
                });
                let error = failures.remove(&entry);
                FlowChild {
                    id: JobId::from(c),
                    state,
                    result,
                    error,
                    queue,
                    child_count,
                }
            })
            .collect())
    }
}
