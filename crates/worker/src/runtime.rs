//! The run loop: take a slot, reserve, start a job task; on shutdown, drain.
//!
//! ```text
//!   slots (semaphore) ─▶ reserve(n free) ─▶ execute(job) tasks ──▶ settle
//!          ▲                                     │ heartbeats
//!          └──────────── permit dropped ◀────────┘
//!   SIGTERM ─▶ /readyz 503, stop reserving ─▶ wait ≤ drain_timeout ─▶ release the rest ─▶ exit 0
//! ```
//!
//! The concurrency limit, the heartbeats, the sweep, the health server and the
//! signals are separate pieces; this file only composes them.

use std::sync::Arc;
use std::time::Duration;

use spool_queue::{Client, Queue};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::builder::WorkerBuilder;
use crate::config::{ConfigError, WorkerConfig};
use crate::execute::{JobEnv, execute};
use crate::handler::Handler;
use crate::health::{Health, serve};
use crate::housekeeping::{ping_loop, sweep_loop};
use crate::metrics as m;
use crate::shutdown::Shutdown;

/// How long one reserve blocks: bounds how late the loop notices a drain (the
/// readiness flag flips at once regardless).
const RESERVE_WAIT: Duration = Duration::from_secs(1);
/// Backoff bounds while Redis is unreachable.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How long releases may take after the drain deadline before the process
/// exits anyway (an unreleased job comes back when its lease expires).
pub const RELEASE_WAIT: Duration = Duration::from_secs(2);
/// How long a reserve already in flight when the drain starts may still take
/// to answer (its jobs are handed straight back) before the loop gives up on
/// it; a job it leased then comes back when its lease expires. Longer than
/// an idle reserve takes with Redis answering (`RESERVE_WAIT`, plus the
/// blocking pop's overshoot at Redis's 100 ms timer and one script call),
/// so a plain drain of an idle worker does not give up on one.
pub const RESERVE_GRACE: Duration = Duration::from_secs(2);
/// The most a shutdown can take beyond `drain_timeout`, whatever Redis does:
/// the reserve grace plus the release wait. Keep
/// `terminationGracePeriodSeconds` at least `drain_timeout` + this.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(4);
/// After SIGINT or a second SIGTERM, how long releases may take.
pub const FORCE_WAIT: Duration = Duration::from_secs(1);

/// Why the runtime could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A setting is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The metrics port could not be bound.
    #[error(
        "cannot listen on {addr} for /metrics, /healthz and /readyz: {source}; set SPOOL_METRICS_ADDR to a free port"
    )]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// Redis refused something that retrying will not fix (authentication, ACL).
    #[error(transparent)]
    Queue(#[from] spool_queue::Error),
    /// Redis may evict keys, and `SPOOL_ALLOW_EVICTION` is not set.
    #[error(
        "Redis at {addr} has maxmemory-policy {policy}: under memory pressure it deletes keys, and a deleted job is lost; set `maxmemory-policy noeviction` on the server (CONFIG SET or the managed service's parameter group), or start anyway with SPOOL_ALLOW_EVICTION=true"
    )]
    Eviction {
        /// `host:port/db` of the server.
        addr: String,
        /// The policy it reported.
        policy: String,
    },
}

impl WorkerError {
    /// Whether the error is a setting to fix (exit code 2 in the binaries),
    /// not a failure of the moment: a bad value, or a Redis URL naming a
    /// Sentinel master no sentinel knows.
    pub fn is_bad_setting(&self) -> bool {
        matches!(
            self,
            WorkerError::Config(_) | WorkerError::Queue(spool_queue::Error::InvalidUrl { .. })
        )
    }
}

/// A worker: a handler and the settings to run it with.
pub struct Worker<H> {
    /// The settings, shared with every job task.
    pub(crate) config: Arc<WorkerConfig>,
    /// The handler, shared with every job task.
    pub(crate) handler: Arc<H>,
    /// Whether `run` installs spool's global Prometheus recorder (see
    /// [`WorkerBuilder::install_metrics_recorder`]).
    pub(crate) install_recorder: bool,
    /// What the worker adds to its registry record.
    pub(crate) info: Option<crate::registry::InfoFn>,
}

impl<H> std::fmt::Debug for Worker<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Worker<H> {
    /// Starts building a worker around `handler`.
    pub fn builder(handler: H) -> WorkerBuilder<H> {
        WorkerBuilder {
            config: WorkerConfig::default(),
            install_recorder: true,
            handler,
            info: None,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Runs until SIGTERM (drain) or SIGINT / a second SIGTERM (stop now).
    pub async fn run(self) -> Result<(), WorkerError> {
        let shutdown = Shutdown::new();
        shutdown
            .listen_for_signals()
            .map_err(WorkerError::Signals)?;
        self.run_with(shutdown).await
    }

    /// Runs until `stop` completes, then drains: for an embedding service
    /// that decides itself what ends the worker (its own signal handling, an
    /// admin endpoint, a `CancellationToken`'s `cancelled_owned()`). Installs
    /// no signal handlers.
    pub async fn run_until<F>(self, stop: F) -> Result<(), WorkerError>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let shutdown = Shutdown::new();
        let drain = shutdown.drain.clone();
        let watcher = tokio::spawn(async move {
            stop.await;
            drain.cancel();
        });
        let result = self.run_with(shutdown).await;
        watcher.abort();
        result
    }

    /// Runs until `shutdown.drain` fires, then drains; `shutdown.force` cuts
    /// the drain short.
    pub async fn run_with(self, shutdown: Shutdown) -> Result<(), WorkerError> {
        let cfg = self.config.clone();
        let health = Arc::new(Health::default());
        if self.install_recorder {
            let _ = m::prometheus();
        }
        metrics::gauge!(m::CAPACITY, "queue" => cfg.queue.clone()).set(cfg.concurrency as f64);
        metrics::gauge!(m::DRAINING).set(0.0);
        // Every job's series, taken once, and each made visible at 0 now.
        let job_metrics = m::JobMetrics::new(&cfg.queue);
        job_metrics.active.set(0.0);
        for outcome in m::Outcome::ALL {
            job_metrics.jobs(outcome).absolute(0);
        }

        let server_stop = CancellationToken::new();
        let server = match cfg.metrics_addr {
            Some(addr) => {
                let (bound, task) = serve(addr, health.clone(), server_stop.clone())
                    .await
                    .map_err(|source| WorkerError::Bind { addr, source })?;
                tracing::info!(%bound, "serving /metrics, /healthz, /readyz");
                Some(task)
            }
            None => None,
        };
        // Readiness flips the moment a drain starts, whatever the loop is doing,
        // and the drain deadline counts from that moment.
        let drain_started = Arc::new(std::sync::OnceLock::new());
        {
            let (health, drain, at) = (
                health.clone(),
                shutdown.drain.clone(),
                drain_started.clone(),
            );
            let stop = server_stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = drain.cancelled() => {
                        let _ = at.set(tokio::time::Instant::now());
                        health.set_draining();
                    }
                    // The worker returned without a drain (a failed connect):
                    // nothing of it keeps running.
                    _ = stop.cancelled() => {}
                }
            });
        }

        let result = match connect(&cfg, &health, &shutdown).await {
            Ok(Some(queue)) => {
                let pinger = tokio::spawn(ping_loop(queue.clone(), health.clone()));
                self.work(queue, job_metrics, &health, &shutdown, &drain_started)
                    .await;
                pinger.abort();
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        server_stop.cancel();
        if let Some(task) = server {
            let _ = task.await;
        }
        tracing::info!("worker stopped");
        result
    }

    async fn work(
        &self,
        queue: Queue,
        metrics: m::JobMetrics,
        health: &Arc<Health>,
        shutdown: &Shutdown,
        drain_started: &std::sync::OnceLock<tokio::time::Instant>,
    ) {
        let cfg = &self.config;
        let sweeper = tokio::spawn(sweep_loop(queue.clone(), cfg.sweep_interval));
        let env = JobEnv {
            handler: self.handler.clone(),
            queue: queue.clone(),
            config: cfg.clone(),
            release_all: CancellationToken::new(),
            running: Arc::default(),
            settler: crate::settler::Settler::start(queue.clone()),
            beater: crate::beater::Beater::start(queue.clone(), cfg.lease),
            health: health.clone(),
            leftovers: Arc::default(),
            metrics,
        };
        let registry = crate::registry::Registry::start(
            queue.clone(),
            cfg,
            env.running.clone(),
            shutdown.drain.clone(),
            self.info.clone(),
        );
        let slots = Arc::new(Semaphore::new(cfg.concurrency));
        let tracker = TaskTracker::new();
        let mut pause = RETRY_MIN;
        // Run to completion (SPOOL_MAX_JOBS, SPOOL_IDLE_EXIT): jobs taken so
        // far, since when nothing was running or reservable, and why the loop
        // stopped taking work on its own.
        let mut taken: u64 = 0;
        let mut idle_since: Option<tokio::time::Instant> = None;
        let mut finishing: Option<&'static str> = None;

        loop {
            if let Some(max) = cfg.max_jobs
                && taken >= max
            {
                finishing = Some("SPOOL_MAX_JOBS reached");
                break;
            }
            let first = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.drain.cancelled() => break,
            };
            let mut permits = vec![first];
            while let Ok(p) = slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            if let Some(max) = cfg.max_jobs {
                permits.truncate(usize::try_from(max - taken).unwrap_or(usize::MAX));
            }
            let reserve = queue.reserve(permits.len(), RESERVE_WAIT);
            tokio::pin!(reserve);
            let reserved = tokio::select! {
                r = &mut reserve => r,
                _ = shutdown.drain.cancelled() => {
                    // A reserve in flight may have leased jobs: give it a
                    // moment to answer so they can be handed back at once.
                    tokio::select! {
                        r = tokio::time::timeout(RESERVE_GRACE, &mut reserve) => match r {
                            Ok(r) => r,
                            Err(_) => {
                                tracing::warn!("a reserve did not answer in time; any job it leased comes back when its lease expires");
                                break;
                            }
                        },
                        _ = shutdown.force.cancelled() => break,
                    }
                }
            };
            match reserved {
                Ok(jobs) => {
                    health.set_redis_ok(true);
                    pause = RETRY_MIN;
                    if shutdown.drain.is_cancelled() && !jobs.is_empty() {
                        // Reserved as the drain began: hand them straight back.
                        let items = jobs
                            .iter()
                            .map(|j| (j, spool_queue::Settle::Release))
                            .collect();
                        if let Err(e) = queue.settle_many(items).await {
                            tracing::warn!(error = %e, "could not release jobs reserved during drain; their leases will expire");
                        }
                        break;
                    }
                    taken += jobs.len() as u64;
                    if jobs.is_empty() && env.running_count() == 0 {
                        let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                        if let Some(idle) = cfg.idle_exit
                            && since.elapsed() >= idle
                        {
                            finishing = Some("SPOOL_IDLE_EXIT: idle");
                            break;
                        }
                    } else {
                        idle_since = None;
                    }
                    for job in jobs {
                        let Some(permit) = permits.pop() else { break };
                        let env = env.clone();
                        tracker.spawn(async move {
                            execute(env, job).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    drop(permits);
                    if e.is_transient() {
                        health.set_redis_ok(false);
                    }
                    tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "reserve failed");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {},
                        _ = shutdown.drain.cancelled() => break,
                    }
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }

        // Run to completion: the jobs taken end on their own (no deadline:
        // an hour-long encode is what this mode is for) unless a SIGTERM
        // comes, which drains as usual below.
        tracker.close();
        if let Some(why) = finishing {
            tracing::info!(
                reason = why,
                taken,
                running = env.running_count(),
                "taking no more jobs; exiting when those running end"
            );
            tokio::select! {
                _ = tracker.wait() => {}
                _ = shutdown.drain.cancelled() => {}
            }
        }
        // Drain: in-flight jobs keep heartbeating and may finish, until the
        // deadline counted from the drain signal.
        let in_flight = env.running_count();
        tracing::info!(
            in_flight,
            timeout_s = cfg.drain_timeout.as_secs_f64(),
            "draining"
        );
        let started = drain_started
            .get()
            .copied()
            .unwrap_or_else(tokio::time::Instant::now);
        let deadline = started
            .checked_add(cfg.drain_timeout)
            .unwrap_or_else(|| tokio::time::Instant::now() + cfg.drain_timeout);
        let mut forced = shutdown.force.is_cancelled();
        if !forced {
            tokio::select! {
                _ = tracker.wait() => tracing::info!("drain complete: every job finished"),
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(left = env.running_count(), "drain deadline: releasing the jobs still running");
                }
                _ = shutdown.force.cancelled() => {
                    tracing::warn!(left = env.running_count(), "forced stop: releasing the jobs still running");
                    forced = true;
                }
            }
        }
        env.release_all.cancel();
        // Releases are bounded too: Redis may not answer at all.
        let wait = if forced { FORCE_WAIT } else { RELEASE_WAIT };
        let _ = tokio::select! {
            r = tokio::time::timeout(wait, tracker.wait()) => r.is_ok(),
            _ = shutdown.force.cancelled(), if !forced => {
                tokio::time::timeout(FORCE_WAIT, tracker.wait()).await.is_ok()
            }
        };
        let unsettled = env.unsettled();
        let settled = unsettled.is_empty();
        let leftover = health.leftover_handlers();
        if leftover > 0 {
            tracing::warn!(
                leftover,
                "exiting with handlers that ignored cancellation still running; their jobs were settled (their code ends with the process)"
            );
        }
        if !settled {
            tracing::error!(
                ?unsettled,
                "exiting with jobs whose results could not reach Redis; their leases will expire and they will run again"
            );
        }
        // Housekeeping only: a sweep in flight either ran on Redis or did not.
        sweeper.abort();
        registry.stop(settled).await;
    }
}

/// Reads Redis's `maxmemory-policy`: anything but `noeviction` lets Redis
/// drop job keys under memory pressure. Logged as an error on every start;
/// refused unless `SPOOL_ALLOW_EVICTION=true`. A server that will not say
/// (INFO denied) is logged and allowed.
async fn check_eviction(client: &Client, cfg: &WorkerConfig) -> Result<(), WorkerError> {
    match client.server_memory().await {
        Ok(m) if m.evicts() => {
            tracing::error!(
                redis = client.addr(),
                policy = %m.policy,
                allowed = cfg.allow_eviction,
                "Redis maxmemory-policy is {}: under memory pressure Redis deletes keys, and a deleted job is lost; set `maxmemory-policy noeviction` (docs/operations.md)",
                m.policy
            );
            if !cfg.allow_eviction {
                return Err(WorkerError::Eviction {
                    addr: client.addr().to_owned(),
                    policy: m.policy,
                });
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot read Redis's maxmemory-policy (grant +info to the worker's ACL user)")
        }
    }
    Ok(())
}

/// Connects, retrying while Redis is unreachable (the worker is not ready
/// meanwhile). `None` when shut down before Redis answered.
async fn connect(
    cfg: &WorkerConfig,
    health: &Health,
    shutdown: &Shutdown,
) -> Result<Option<Queue>, WorkerError> {
    let mut pause = RETRY_MIN;
    let options = cfg.client_options()?;
    loop {
        let attempt = tokio::select! {
            r = Client::connect_with(&cfg.redis_url, options.clone()) => r,
            _ = shutdown.drain.cancelled() => return Ok(None),
        };
        match attempt {
            Ok(client) => {
                check_eviction(&client, cfg).await?;
                health.set_redis_ok(true);
                tracing::info!(redis = client.addr(), queue = %cfg.queue, concurrency = cfg.concurrency, "connected");
                return Ok(Some(client.queue(&cfg.queue)?));
            }
            Err(e) if e.is_transient() => {
                health.set_redis_ok(false);
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "cannot connect yet");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {},
                    _ = shutdown.drain.cancelled() => return Ok(None),
                }
                pause = (pause * 2).min(RETRY_MAX);
            }
            Err(e) => return Err(e.into()),
        }
    }
}
