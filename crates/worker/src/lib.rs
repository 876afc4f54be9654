//! The spool worker runtime, embedded by media services.
//!
//! Implement [`Handler`] for your job type, build a [`Worker`], and `run()` it:
//! the runtime reserves jobs while it has free slots (bounded concurrency),
//! heartbeats their leases (the beats of jobs due together in one call),
//! reports progress, settles them from the handler's
//! answer, survives handler panics, sweeps expired leases and due jobs, serves
//! `/metrics`, `/healthz` and `/readyz`, and drains on SIGTERM exactly as the
//! autoscalers expect (docs/operations.md, "Draining"): readiness off at once, in-flight jobs
//! may finish until the drain timeout, the rest are released to the front of
//! the backlog, exit 0.
//!
//! ```no_run
//! use spool_worker::{Handler, JobContext, JobError, Worker, WorkerConfig};
//!
//! struct Thumbnail;
//!
//! #[derive(serde::Deserialize)]
//! struct Job { input: String }
//!
//! impl Handler for Thumbnail {
//!     type Payload = Job;
//!     async fn handle(&self, job: Job, ctx: JobContext) -> Result<Option<serde_json::Value>, JobError> {
//!         ctx.progress(serde_json::json!({ "percent": 50 }));
//!         if job.input.is_empty() {
//!             return Err(JobError::permanent("no input"));
//!         }
//!         Ok(Some(serde_json::json!({ "thumbnail": format!("{}.jpg", job.input) })))
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // In a service's main: settings from SPOOL_*, SIGTERM drains.
//! let config = WorkerConfig::from_env()?;
//! spool_worker::init_logging(config.log_format);
//! Worker::builder(Thumbnail).config(config).build()?.run().await?;
//! # Ok(()) }
//! ```
//!
//! And run for real against a throwaway `redis-server`: one job enqueued,
//! handled and completed, then the worker stopped by a future of the
//! embedding's choosing ([`Worker::run_until`]):
//!
//! ```
//! # use spool_worker::{Handler, JobContext, JobError, Worker};
//! # struct Thumbnail;
//! # #[derive(serde::Deserialize)]
//! # struct Job { input: String }
//! # impl Handler for Thumbnail {
//! #     type Payload = Job;
//! #     async fn handle(&self, job: Job, _ctx: JobContext) -> Result<Option<serde_json::Value>, JobError> {
//! #         Ok(Some(serde_json::json!({ "thumbnail": format!("{}.jpg", job.input) })))
//! #     }
//! # }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = spool_testkit::RedisServer::start()?;
//! # let url = server.url();
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! use std::time::Duration;
//! use spool_queue::{Client, JobOptions, JobState};
//!
//! let queue = Client::connect(&url).await?.queue("thumbs")?;
//! let id = queue.enqueue(br#"{"input":"a"}"#.to_vec(), JobOptions::default()).await?;
//!
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let worker = Worker::builder(Thumbnail)
//!     .redis_url(url.as_str())
//!     .queue("thumbs")
//!     .metrics_addr(None)
//!     .build()?;
//! let running = tokio::spawn(worker.run_until(async move {
//!     let _ = stopped.await;
//! }));
//! let deadline = std::time::Instant::now() + Duration::from_secs(30);
//! while queue.info(&id).await?.state != JobState::Completed {
//!     assert!(std::time::Instant::now() < deadline, "the job never completed");
//!     tokio::time::sleep(Duration::from_millis(20)).await;
//! }
//! let _ = stop.send(());
//! running.await??;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok(()) }
//! ```

#[cfg(feature = "clap")]
mod args;
mod batch;
mod beater;
mod builder;
mod config;
mod execute;
mod handler;
mod health;
mod housekeeping;
mod logging;
pub mod metrics;
mod registry;
mod runtime;
mod settings;
mod settler;
mod shutdown;
pub mod testing;

#[cfg(feature = "clap")]
pub use args::WorkerArgs;
pub use builder::WorkerBuilder;
pub use config::{
    ConfigError, DEFAULT_DRAIN_TIMEOUT, DEFAULT_METRICS_ADDR, DEFAULT_QUEUE, DEFAULT_REDIS_URL,
    DEFAULT_SWEEP_INTERVAL, LogFormat, MAX_CONCURRENCY, MAX_DRAIN_TIMEOUT, MAX_LEASE, MAX_MAX_JOBS,
    MAX_SWEEP_INTERVAL, MIN_HEARTBEAT, MIN_IDLE_EXIT, MIN_LEASE, MIN_SWEEP_INTERVAL, WorkerConfig,
    parse_duration,
};
pub use handler::{Handler, JobContext, JobError};
pub use health::Health;
pub use logging::{init_logging, init_logging_to};
pub use runtime::{FORCE_WAIT, RELEASE_WAIT, RESERVE_GRACE, SHUTDOWN_MARGIN, Worker, WorkerError};
pub use settings::{SETTINGS, Setting};
pub use shutdown::Shutdown;
pub use spool_queue::LogLevel;
