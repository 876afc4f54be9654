//! A reliable Redis job queue for render and encode fleets.
//!
//! Producers [`Queue::enqueue`] jobs; consumers [`Queue::reserve`] them under a
//! *lease* (a deadline and a fencing token), [`Queue::heartbeat`] while they
//! work, and [`Queue::settle`] them: complete, fail (retry with backoff, or
//! dead), release, or acknowledge a cancel. Every state change is one Lua script,
//! so a worker that dies at any instruction leaves the job either untouched or
//! fully moved, and an expired lease returns the job to the backlog. Delivery
//! is at-least-once: handlers must tolerate a rerun.
//!
//! ```text
//!  enqueue ─▶ scheduled ──due──▶ ready ──reserve──▶ active ──complete──▶ completed
//!              ▲   │               ▲  ▲               │ │ └─fail, no attempts left─▶ dead
//!              │   └──cancel─┐     │  └──release──────┘ │                            │
//!              └──fail, retry┼─────┼────────────────────┘      ◀──── dead retry ─────┘
//!                            ▼     └── lease expired (sweep)
//!                        cancelled
//! ```
//!
//! Per queue, the size of `spool:{q}:ready` is the backlog and the size of
//! `spool:{q}:outstanding` is the outstanding work (ready + active): KEDA's
//! `redis` trigger reads either directly. `docs/protocol.md` gives the full
//! key layout and the scripts, for producers in other languages.
//!
//! A round trip against a throwaway `redis-server` (the doc-test starts one
//! with `spool-testkit`, as every spool test does):
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = spool_testkit::RedisServer::start()?;
//! # let url = server.url();
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! use std::time::Duration;
//! use spool_queue::{Client, JobOptions, JobState};
//!
//! let client = Client::connect(&url).await?;
//! let queue = client.queue("encode")?;
//! let id = queue
//!     .enqueue(br#"{"input":"a.mov"}"#.to_vec(), JobOptions::default())
//!     .await?;
//! for job in queue.reserve(1, Duration::from_secs(5)).await? {
//!     // ... do the work, heartbeating if it is long ...
//!     queue.complete(&job, br#"{"ok":true}"#).await?;
//! }
//! assert_eq!(queue.info(&id).await?.state, JobState::Completed);
//! # Ok::<(), spool_queue::Error>(())
//! # })?;
//! # Ok(()) }
//! ```

mod backoff;
mod connection;
mod duration;
mod error;
mod id;
mod job;
mod keys;
mod queue;
mod scripts;

/// The version of the queue protocol (docs/protocol.md: keys, fields,
/// scripts) this crate speaks. Workers publish it in their registry record;
/// the Python and Node producers carry their own and warn when a live
/// worker's differs. 2: job events (`watch`, `spool:{q}:events`), failure
/// records and the minute history.
/// 3: flows (state `waiting`, `spool:{q}:waiting`, the flow keys).
pub const PROTOCOL: u32 = 3;

pub use backoff::{backoff_cap, backoff_delay};
pub use connection::mask_password;
/// The deadpool-redis this crate builds against, for
/// [`Client::connect_with_pool`].
pub use deadpool_redis;
pub use duration::{MAX_DURATION, parse_duration};
pub use error::{Error, Result};
pub use id::JobId;
pub use job::{
    DEFAULT_BACKOFF, DEFAULT_BACKOFF_MAX, DEFAULT_LEASE, DEFAULT_MAX_ATTEMPTS, DEFAULT_RETENTION,
    Failure, JobInfo, JobOptions, JobState, MAX_ATTEMPTS, MAX_BACKOFF, MAX_DELAY, MAX_LEASE,
    MAX_RETENTION, MAX_TIMEOUT, NewJob, PRIORITY_RANGE, ReservedJob,
};
pub use keys::Keys;
#[doc(hidden)]
#[cfg(feature = "testing")]
pub use queue::fuzzing;
pub use queue::{
    CancelOutcome, CheckReport, ChildFailure, Client, ClientOptions, DEFAULT_MAX_PAYLOAD,
    DEFAULT_MAX_RESERVE_BYTES, DEFAULT_REPLICA_TIMEOUT, Flow, FlowChild, HISTORY_MINUTES,
    Heartbeat, JobEvent, JobPage, LogLevel, LogLine, MAX_BATCH, MAX_FLOW_DEPTH, MAX_LOG_LINES,
    MAX_LOG_MESSAGE, MAX_MIN_REPLICAS, Minute, PauseState, Queue, QueueStats, Reservation,
    SAFE_EVICTION_POLICY, ServerMemory, Settle, SweepReport, Unreadable, WorkerRecord,
};
pub use scripts::SCRIPT_PARTS;
