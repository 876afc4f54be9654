//! The runtime's settings as command-line flags with `SPOOL_*` fallbacks
//! (feature `clap`), for binaries that embed the worker: flatten
//! [`WorkerArgs`] into the binary's own parser and call
//! [`WorkerArgs::config`]. Values stay strings until [`WorkerConfig`] parses
//! them, so every error names its `SPOOL_*` setting whether it came from a
//! flag or the environment.

use crate::config::{ConfigError, DEFAULT_QUEUE, DEFAULT_REDIS_URL, WorkerConfig};

/// The runtime's flags (`--redis-url`, `--lease`, …), each also read from
/// its `SPOOL_*` variable; flags win.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Redis URL; `rediss://` for TLS, a comma-separated list for a cluster.
    #[arg(long, env = "SPOOL_REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis_url: String,
    /// A PEM CA bundle to trust for rediss:// (a private CA).
    #[arg(long, env = "SPOOL_REDIS_CA_FILE")]
    pub redis_ca_file: Option<String>,
    /// The queue to work.
    #[arg(long, env = "SPOOL_QUEUE", default_value = DEFAULT_QUEUE)]
    pub queue: String,
    /// Jobs at once.
    #[arg(long, env = "SPOOL_CONCURRENCY")]
    pub concurrency: Option<String>,
    /// Lease each heartbeat grants (e.g. 30s).
    #[arg(long, env = "SPOOL_LEASE")]
    pub lease: Option<String>,
    /// Heartbeat period (default: a third of the lease).
    #[arg(long, env = "SPOOL_HEARTBEAT")]
    pub heartbeat: Option<String>,
    /// Sweep and queue-depth refresh period (e.g. 5s).
    #[arg(long, env = "SPOOL_SWEEP_INTERVAL")]
    pub sweep_interval: Option<String>,
    /// Time running jobs get after SIGTERM (e.g. 25s).
    #[arg(long, env = "SPOOL_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<String>,
    /// Address of /metrics, /healthz, /readyz, or `off`.
    #[arg(long, env = "SPOOL_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// `text` or `json`.
    #[arg(long, env = "SPOOL_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Start even when Redis may evict keys (`maxmemory-policy` other than
    /// noeviction), which loses jobs: `true` or `false`.
    #[arg(long, env = "SPOOL_ALLOW_EVICTION")]
    pub allow_eviction: Option<String>,
    /// Replicas that must have each enqueue and settle before it returns
    /// (Redis `WAIT`); 0 does not wait.
    #[arg(long, env = "SPOOL_REDIS_MIN_REPLICAS")]
    pub redis_min_replicas: Option<String>,
    /// Take at most this many jobs, let them end, exit 0 (KEDA ScaledJob).
    #[arg(long, env = "SPOOL_MAX_JOBS")]
    pub max_jobs: Option<String>,
    /// Exit 0 after this long idle (nothing to reserve, nothing running).
    #[arg(long, env = "SPOOL_IDLE_EXIT")]
    pub idle_exit: Option<String>,
    /// Cancel and fail a handling that runs longer than this (e.g. 2h).
    #[arg(long, env = "SPOOL_JOB_TIMEOUT")]
    pub job_timeout: Option<String>,
    /// Retry a timed-out job instead of marking it dead: true or false.
    #[arg(long, env = "SPOOL_JOB_TIMEOUT_RETRY")]
    pub job_timeout_retry: Option<String>,
    /// Cap every handling's time limit, whatever the job asks for (e.g. 8h).
    #[arg(long, env = "SPOOL_MAX_JOB_TIMEOUT")]
    pub max_job_timeout: Option<String>,
}

impl WorkerArgs {
    /// Parses and checks every value, naming the setting of the first bad
    /// one.
    pub fn config(&self) -> Result<WorkerConfig, ConfigError> {
        WorkerConfig::from_lookup(|setting| {
            match setting {
                "SPOOL_REDIS_URL" => Some(&self.redis_url),
                "SPOOL_REDIS_CA_FILE" => self.redis_ca_file.as_ref(),
                "SPOOL_QUEUE" => Some(&self.queue),
                "SPOOL_CONCURRENCY" => self.concurrency.as_ref(),
                "SPOOL_LEASE" => self.lease.as_ref(),
                "SPOOL_HEARTBEAT" => self.heartbeat.as_ref(),
                "SPOOL_SWEEP_INTERVAL" => self.sweep_interval.as_ref(),
                "SPOOL_DRAIN_TIMEOUT" => self.drain_timeout.as_ref(),
                "SPOOL_METRICS_ADDR" => self.metrics_addr.as_ref(),
                "SPOOL_ALLOW_EVICTION" => self.allow_eviction.as_ref(),
                "SPOOL_REDIS_MIN_REPLICAS" => self.redis_min_replicas.as_ref(),
                "SPOOL_MAX_JOBS" => self.max_jobs.as_ref(),
                "SPOOL_IDLE_EXIT" => self.idle_exit.as_ref(),
                "SPOOL_JOB_TIMEOUT" => self.job_timeout.as_ref(),
                "SPOOL_JOB_TIMEOUT_RETRY" => self.job_timeout_retry.as_ref(),
                "SPOOL_MAX_JOB_TIMEOUT" => self.max_job_timeout.as_ref(),
                "SPOOL_LOG_FORMAT" => self.log_format.as_ref(),
                _ => None,
            }
            .cloned()
        })
    }
}
