//! Building a [`Worker`]: every setting defaults as in [`WorkerConfig`], each
//! can be set in code, and `build` checks them together.
//!
//! Process-wide choices stay with the program that embeds the worker: whether
//! spool installs the global `metrics` recorder
//! ([`WorkerBuilder::install_metrics_recorder`], on by default so `/metrics`
//! works out of the box) and whether it listens for SIGTERM/SIGINT
//! ([`Worker::run`] does; [`Worker::run_until`] never touches signals).

use std::sync::Arc;
use std::time::Duration;

use crate::config::{ConfigError, WorkerConfig};
use crate::handler::Handler;
use crate::runtime::Worker;

/// Builds a [`Worker`]; every setting defaults as in [`WorkerConfig`].
pub struct WorkerBuilder<H> {
    /// The settings so far.
    pub(crate) config: WorkerConfig,
    /// The handler the worker will run.
    pub(crate) handler: H,
    /// Whether `run` installs spool's global Prometheus recorder.
    pub(crate) install_recorder: bool,
    /// What the worker adds to its registry record (see
    /// [`WorkerBuilder::worker_info`]).
    pub(crate) info: Option<crate::registry::InfoFn>,
}

impl<H> std::fmt::Debug for WorkerBuilder<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> WorkerBuilder<H> {
    /// Replaces every setting (e.g. with [`WorkerConfig::from_env`]).
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }
    /// The Redis URL.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.config.redis_url = url.into();
        self
    }
    /// The queue.
    pub fn queue(mut self, name: impl Into<String>) -> Self {
        self.config.queue = name.into();
        self
    }
    /// Jobs run at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n;
        self
    }
    /// The lease each heartbeat grants.
    pub fn lease(mut self, d: Duration) -> Self {
        self.config.lease = Some(d);
        self
    }
    /// The heartbeat period.
    pub fn heartbeat(mut self, d: Duration) -> Self {
        self.config.heartbeat = Some(d);
        self
    }
    /// How long in-flight jobs may run after SIGTERM.
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.config.drain_timeout = d;
        self
    }
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (`None`: nowhere).
    pub fn metrics_addr(mut self, addr: Option<std::net::SocketAddr>) -> Self {
        self.config.metrics_addr = addr;
        self
    }
    /// Whether the worker installs spool's process-wide Prometheus recorder
    /// when it starts (default `true`). Turn it off when the embedding program
    /// installs its own `metrics` recorder: spool's metrics then go to that
    /// recorder, and `/metrics` answers 503. Install it before the worker
    /// runs: the worker takes its per-job metric handles when it starts.
    pub fn install_metrics_recorder(mut self, install: bool) -> Self {
        self.install_recorder = install;
        self
    }

    /// What this worker adds to its record in the worker registry
    /// (`spoolctl workers`, the console), called at every refresh: the
    /// encoder worker reports its GPUs and NVENC sessions here.
    pub fn worker_info(
        mut self,
        info: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.info = Some(Arc::new(info));
        self
    }

    /// Checks the settings and builds the worker.
    pub fn build(self) -> Result<Worker<H>, ConfigError> {
        self.config.validate()?;
        Ok(Worker {
            config: Arc::new(self.config),
            handler: Arc::new(self.handler),
            install_recorder: self.install_recorder,
            info: self.info,
        })
    }
}
