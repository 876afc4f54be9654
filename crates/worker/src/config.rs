//! Worker settings: one typed struct, defaults in one place, parsed once at
//! start-up from `SPOOL_*` variables (and, in binaries, flags), each error
//! naming the setting.
//!
//! Over 400 lines because the unit and property tests of every setting's
//! bounds live beside the parsers they check (about a third of the file).

use std::net::SocketAddr;
use std::time::Duration;

/// Default drain timeout: below Kubernetes' default 30 s grace period, with room
/// for the release and the exit.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// Default metrics and health address.
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9464";
/// Default Redis URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Default queue.
pub const DEFAULT_QUEUE: &str = "encode";
/// How often a worker runs the sweep and refreshes the queue-depth gauges.
/// Every worker sweeps; the sweep is idempotent and costs one script call.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Bounds on the settings: values outside them break a guarantee (a lease
/// shorter than a round trip plus a GC pause loses jobs to the sweep) or
/// make no sense (a million-slot semaphore).
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// The longest lease (the queue's own bound).
pub const MAX_LEASE: Duration = spool_queue::MAX_LEASE;
/// The longest drain: a day covers the longest encode a pod may finish.
pub const MAX_DRAIN_TIMEOUT: Duration = Duration::from_secs(86_400);
/// Sweep at least this rarely (each sweep is a script call per worker) and
/// at least this often.
/// The most jobs `SPOOL_MAX_JOBS` may allow.
pub const MAX_MAX_JOBS: u64 = 1_000_000_000;
/// The shortest `SPOOL_IDLE_EXIT` (one reserve wait).
pub const MIN_IDLE_EXIT: Duration = Duration::from_secs(1);
/// The shortest sweep interval.
pub const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// The longest sweep interval: an hour.
pub const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// The shortest heartbeat period: a few round trips.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(20);
/// The most jobs one process runs at once.
pub const MAX_CONCURRENCY: usize = 10_000;

/// A setting with a value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid {setting}={value:?}: {reason}")]
pub struct ConfigError {
    /// The setting's name (the environment variable).
    pub setting: &'static str,
    /// The value given (a Redis URL is shown with its password masked).
    pub value: String,
    /// What is accepted.
    pub reason: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Everything the runtime needs to know.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// `SPOOL_REDIS_URL`: where the queue lives.
    pub redis_url: String,
    /// `SPOOL_REDIS_CA_FILE`: a PEM CA bundle to trust for `rediss://` (a
    /// private CA); unset trusts the public roots.
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// `SPOOL_QUEUE`: the queue to work.
    pub queue: String,
    /// `SPOOL_CONCURRENCY`: jobs run at once.
    pub concurrency: usize,
    /// `SPOOL_LEASE`: the lease each heartbeat grants; `None` keeps the one each
    /// job was enqueued with.
    pub lease: Option<Duration>,
    /// `SPOOL_HEARTBEAT`: how often to heartbeat; `None` is a third of the lease,
    /// so two beats can be lost before the lease runs out.
    pub heartbeat: Option<Duration>,
    /// `SPOOL_DRAIN_TIMEOUT`: how long in-flight jobs may run after SIGTERM.
    pub drain_timeout: Duration,
    /// `SPOOL_METRICS_ADDR`: where `/metrics`, `/healthz` and `/readyz` listen;
    /// `None` (the value `off`) serves nothing.
    pub metrics_addr: Option<SocketAddr>,
    /// `SPOOL_SWEEP_INTERVAL`: sweep and queue-depth refresh period.
    pub sweep_interval: Duration,
    /// `SPOOL_LOG_FORMAT`: `text` or `json`.
    pub log_format: LogFormat,
    /// `SPOOL_ALLOW_EVICTION`: start even when Redis's `maxmemory-policy`
    /// may evict keys (which loses jobs); off by default.
    pub allow_eviction: bool,
    /// `SPOOL_REDIS_MIN_REPLICAS`: settles return only once this many
    /// replicas have the write (`WAIT`); 0 (the default) does not wait.
    pub redis_min_replicas: u32,
    /// `SPOOL_MAX_JOBS`: take at most this many jobs in this process's
    /// life, let them end, and exit 0 (a KEDA ScaledJob's pod); `None` runs
    /// until SIGTERM.
    pub max_jobs: Option<u64>,
    /// `SPOOL_IDLE_EXIT`: exit 0 after this long with nothing to reserve and
    /// nothing running; `None` never does.
    pub idle_exit: Option<Duration>,
    /// `SPOOL_JOB_TIMEOUT`: a handling that runs longer is cancelled and the
    /// job failed ("timed out after …"); `None` (the default) sets no limit.
    pub job_timeout: Option<Duration>,
    /// `SPOOL_JOB_TIMEOUT_RETRY`: a timed-out job is retried (with backoff)
    /// instead of dead, unless the job chose itself (its `timeout_retry`).
    pub job_timeout_retry: bool,
    /// `SPOOL_MAX_JOB_TIMEOUT`: the longest any handling may run, whatever
    /// limit the job or its payload asks for (`None`: no cap).
    pub max_job_timeout: Option<Duration>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            redis_url: DEFAULT_REDIS_URL.into(),
            redis_ca_file: None,
            queue: DEFAULT_QUEUE.into(),
            concurrency: 1,
            lease: None,
            heartbeat: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            metrics_addr: DEFAULT_METRICS_ADDR.parse().ok(),
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            log_format: LogFormat::Text,
            allow_eviction: false,
            redis_min_replicas: 0,
            max_jobs: None,
            idle_exit: None,
            job_timeout: None,
            job_timeout_retry: false,
            max_job_timeout: None,
        }
    }
}

impl WorkerConfig {
    /// Reads the `SPOOL_*` variables over the defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `get` (the environment, or a test's map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = WorkerConfig::default();
        // The queue has a default, but a queue set to nothing is a mistake
        // (a typo in a manifest), not a request for the default.
        if let Some(v) = get("SPOOL_QUEUE")
            && v.trim().is_empty()
        {
            return Err(ConfigError {
                setting: "SPOOL_QUEUE",
                value: v,
                reason: "is set but empty; unset it for the default `encode`".into(),
            });
        }
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("SPOOL_REDIS_URL") {
            c.redis_url = v;
        }
        if let Some(v) = get("SPOOL_ALLOW_EVICTION") {
            c.allow_eviction = parse_bool("SPOOL_ALLOW_EVICTION", &v)?;
        }
        if let Some(v) = get("SPOOL_REDIS_MIN_REPLICAS") {
            c.redis_min_replicas = v
                .trim()
                .parse()
                .ok()
                .filter(|n| *n <= spool_queue::MAX_MIN_REPLICAS)
                .ok_or_else(|| ConfigError {
                    setting: "SPOOL_REDIS_MIN_REPLICAS",
                    value: v.clone(),
                    reason: format!(
                        "must be a whole number from 0 to {}",
                        spool_queue::MAX_MIN_REPLICAS
                    ),
                })?;
        }
        if let Some(v) = get("SPOOL_REDIS_CA_FILE") {
            c.redis_ca_file = Some(v.into());
        }
        if let Some(v) = get("SPOOL_QUEUE") {
            c.queue = v;
        }
        if let Some(v) = get("SPOOL_CONCURRENCY") {
            c.concurrency = parse_concurrency(&v)?;
        }
        if let Some(v) = get("SPOOL_LEASE") {
            c.lease = Some(parse_duration("SPOOL_LEASE", &v)?);
        }
        if let Some(v) = get("SPOOL_HEARTBEAT") {
            c.heartbeat = Some(parse_duration("SPOOL_HEARTBEAT", &v)?);
        }
        if let Some(v) = get("SPOOL_DRAIN_TIMEOUT") {
            c.drain_timeout = parse_duration("SPOOL_DRAIN_TIMEOUT", &v)?;
        }
        if let Some(v) = get("SPOOL_METRICS_ADDR") {
            c.metrics_addr = parse_addr(&v)?;
        }
        if let Some(v) = get("SPOOL_SWEEP_INTERVAL") {
            c.sweep_interval = parse_duration("SPOOL_SWEEP_INTERVAL", &v)?;
        }
        if let Some(v) = get("SPOOL_LOG_FORMAT") {
            c.log_format = parse_log_format(&v)?;
        }
        if let Some(v) = get("SPOOL_MAX_JOBS") {
            c.max_jobs = Some(
                v.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=MAX_MAX_JOBS).contains(n))
                    .ok_or_else(|| ConfigError {
                        setting: "SPOOL_MAX_JOBS",
                        value: v.clone(),
                        reason: format!(
                            "must be a whole number of jobs within 1..={MAX_MAX_JOBS} (unset: no limit)"
                        ),
                    })?,
            );
        }
        if let Some(v) = get("SPOOL_IDLE_EXIT") {
            c.idle_exit = Some(parse_duration("SPOOL_IDLE_EXIT", &v)?);
        }
        if let Some(v) = get("SPOOL_JOB_TIMEOUT") {
            c.job_timeout = Some(parse_duration("SPOOL_JOB_TIMEOUT", &v)?);
        }
        if let Some(v) = get("SPOOL_JOB_TIMEOUT_RETRY") {
            c.job_timeout_retry = parse_bool("SPOOL_JOB_TIMEOUT_RETRY", &v)?;
        }
        if let Some(v) = get("SPOOL_MAX_JOB_TIMEOUT") {
            c.max_job_timeout = Some(parse_duration("SPOOL_MAX_JOB_TIMEOUT", &v)?);
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks every value and the values that only make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(ConfigError {
                setting: "SPOOL_CONCURRENCY",
                value: self.concurrency.to_string(),
                reason: format!("must be within 1..={MAX_CONCURRENCY}"),
            });
        }
        spool_queue::Client::check_url(&self.redis_url).map_err(|e| ConfigError {
            setting: "SPOOL_REDIS_URL",
            value: spool_queue::mask_password(&self.redis_url),
            reason: e.to_string(),
        })?;
        let range = |setting, v: Duration, min: Duration, max: Duration| {
            if v < min || v > max {
                Err(ConfigError {
                    setting,
                    value: format!("{v:?}"),
                    reason: format!("must be within {min:?}..={max:?}"),
                })
            } else {
                Ok(())
            }
        };
        if let Some(lease) = self.lease {
            range("SPOOL_LEASE", lease, MIN_LEASE, MAX_LEASE)?;
        }
        if let Some(t) = self.job_timeout {
            range("SPOOL_JOB_TIMEOUT", t, MIN_IDLE_EXIT, MAX_DRAIN_TIMEOUT)?;
        }
        if let Some(max) = self.max_job_timeout {
            range(
                "SPOOL_MAX_JOB_TIMEOUT",
                max,
                MIN_IDLE_EXIT,
                spool_queue::MAX_TIMEOUT,
            )?;
            if let Some(t) = self.job_timeout.filter(|&t| t > max) {
                return Err(ConfigError {
                    setting: "SPOOL_JOB_TIMEOUT",
                    value: format!("{t:?}"),
                    reason: format!("is longer than SPOOL_MAX_JOB_TIMEOUT ({max:?})"),
                });
            }
        }
        if let Some(idle) = self.idle_exit {
            range("SPOOL_IDLE_EXIT", idle, MIN_IDLE_EXIT, MAX_DRAIN_TIMEOUT)?;
        }
        range(
            "SPOOL_DRAIN_TIMEOUT",
            self.drain_timeout,
            Duration::ZERO,
            MAX_DRAIN_TIMEOUT,
        )?;
        range(
            "SPOOL_SWEEP_INTERVAL",
            self.sweep_interval,
            MIN_SWEEP_INTERVAL,
            MAX_SWEEP_INTERVAL,
        )?;
        if let Some(hb) = self.heartbeat {
            range("SPOOL_HEARTBEAT", hb, MIN_HEARTBEAT, MAX_LEASE / 2)?;
        }
        spool_queue::Keys::new(&self.queue).map_err(|e| ConfigError {
            setting: "SPOOL_QUEUE",
            value: self.queue.clone(),
            reason: e.to_string(),
        })?;
        if let (Some(lease), Some(hb)) = (self.lease, self.heartbeat)
            && hb > lease / 2
        {
            return Err(ConfigError {
                setting: "SPOOL_HEARTBEAT",
                value: format!("{hb:?}"),
                reason: format!(
                    "must be at most half of SPOOL_LEASE ({lease:?}), ideally a third, so a lost beat does not lose the lease"
                ),
            });
        }
        self.client_options()?;
        Ok(())
    }

    /// The queue client's options: the CA bundle when one is set.
    pub fn client_options(&self) -> Result<spool_queue::ClientOptions, ConfigError> {
        let options =
            spool_queue::ClientOptions::default().with_min_replicas(self.redis_min_replicas);
        match &self.redis_ca_file {
            None => Ok(options),
            Some(p) => options.with_tls_ca_file(p).map_err(|reason| ConfigError {
                setting: "SPOOL_REDIS_CA_FILE",
                value: p.display().to_string(),
                reason,
            }),
        }
    }

    /// The heartbeat period for a job whose lease is `job_lease`: the
    /// setting, or a third of the lease, and never more than half of the
    /// lease in force (a job's own lease may be shorter than the setting
    /// assumed).
    pub(crate) fn heartbeat_for(&self, job_lease: Duration) -> Duration {
        let lease = self.lease.unwrap_or(job_lease);
        self.heartbeat
            .unwrap_or(lease / 3)
            .min(lease / 2)
            .max(MIN_HEARTBEAT)
    }
}

fn parse_concurrency(v: &str) -> Result<usize, ConfigError> {
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ConfigError {
            setting: "SPOOL_CONCURRENCY",
            value: v.into(),
            reason: "must be a whole number of at least 1".into(),
        }),
    }
}

fn parse_addr(v: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if v.trim() == "off" {
        return Ok(None);
    }
    v.trim().parse().map(Some).map_err(|_| ConfigError {
        setting: "SPOOL_METRICS_ADDR",
        value: v.into(),
        reason: "must be host:port with a numeric IP, e.g. 0.0.0.0:9464, or `off`".into(),
    })
}

fn parse_log_format(v: &str) -> Result<LogFormat, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(ConfigError {
            setting: "SPOOL_LOG_FORMAT",
            value: v.into(),
            reason: "must be `text` or `json`".into(),
        }),
    }
}

/// Parses `30s`, `500ms`, `2m`, `1h`, or a plain number of seconds
/// ([`spool_queue::parse_duration`]), naming `setting` when it cannot.
pub fn parse_duration(setting: &'static str, v: &str) -> Result<Duration, ConfigError> {
    spool_queue::parse_duration(v).ok_or_else(|| ConfigError {
        setting,
        value: v.into(),
        reason: "must be a duration such as 30s, 500ms, 2m or a number of seconds".into(),
    })
}

/// `true`/`false` (or `1`/`0`, `yes`/`no`).
fn parse_bool(setting: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ConfigError {
            setting,
            value: v.to_owned(),
            reason: "must be true or false".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<WorkerConfig, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        WorkerConfig::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_design() -> Result<(), ConfigError> {
        let c = cfg(&[])?;
        assert_eq!(c.queue, "encode");
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(c.drain_timeout, Duration::from_secs(25));
        assert_eq!(c.metrics_addr, "0.0.0.0:9464".parse().ok());
        Ok(())
    }

    /// The CA file is read once, by the queue's client options, and a file
    /// that cannot be a CA bundle is refused at start naming the setting.
    #[test]
    fn a_ca_file_must_be_readable_pem() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (pem, junk) = (dir.path().join("ca.pem"), dir.path().join("ca.txt"));
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )?;
        std::fs::write(&junk, "not a certificate")?;
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let c = cfg(&[("SPOOL_REDIS_CA_FILE", &path(&pem))])?;
        assert!(c.client_options()?.tls_ca_pem.is_some());
        for (bad, why) in [
            (path(&junk), "no PEM block"),
            (path(&dir.path().join("absent.pem")), "cannot read it"),
        ] {
            let e = cfg(&[("SPOOL_REDIS_CA_FILE", &bad)])
                .err()
                .ok_or("accepted")?;
            assert_eq!(e.setting, "SPOOL_REDIS_CA_FILE");
            assert!(e.reason.contains(why), "{e}");
        }
        Ok(())
    }

    #[test]
    fn a_heartbeat_stays_well_below_the_lease_in_force() -> Result<(), ConfigError> {
        // Not more than half the lease, whether it comes from the settings...
        assert!(cfg(&[("SPOOL_LEASE", "10s"), ("SPOOL_HEARTBEAT", "6s")]).is_err());
        let c = cfg(&[("SPOOL_LEASE", "10s"), ("SPOOL_HEARTBEAT", "5s")])?;
        assert_eq!(
            c.heartbeat_for(Duration::from_secs(60)),
            Duration::from_secs(5)
        );
        // ...or from the job's own lease.
        let c = cfg(&[("SPOOL_HEARTBEAT", "20s")])?;
        assert_eq!(
            c.heartbeat_for(Duration::from_secs(6)),
            Duration::from_secs(3)
        );
        assert_eq!(
            c.heartbeat_for(Duration::from_secs(60)),
            Duration::from_secs(20)
        );
        Ok(())
    }

    proptest::proptest! {
        /// Numbers-with-units of any size: parsed within bounds or refused.
        #[test]
        fn durations_of_any_size_never_panic(n in proptest::prelude::any::<u64>(), unit in "(ms|s|m|h|)") {
            let v = format!("{n}{unit}");
            if let Ok(d) = parse_duration("X", &v) {
                proptest::prop_assert!(d <= spool_queue::MAX_DURATION);
            }
        }
    }

    #[test]
    fn durations_parse_in_several_units() -> Result<(), ConfigError> {
        assert_eq!(parse_duration("X", "30")?, Duration::from_secs(30));
        assert_eq!(parse_duration("X", "250ms")?, Duration::from_millis(250));
        assert_eq!(parse_duration("X", "2m")?, Duration::from_secs(120));
        assert!(parse_duration("X", "soon").is_err());
        Ok(())
    }

    #[test]
    fn bad_values_name_their_setting() {
        let cases = [
            ("SPOOL_CONCURRENCY", "0"),
            ("SPOOL_CONCURRENCY", "many"),
            ("SPOOL_LEASE", "forever"),
            ("SPOOL_METRICS_ADDR", "nowhere"),
            ("SPOOL_LOG_FORMAT", "xml"),
            ("SPOOL_QUEUE", "a b"),
            ("SPOOL_QUEUE", " "),
            ("SPOOL_CONCURRENCY", "18446744073709551615"),
            ("SPOOL_CONCURRENCY", "99999999999999999999999"),
            ("SPOOL_LEASE", "1ms"),
            ("SPOOL_LEASE", "100000000000000000000"),
            ("SPOOL_LEASE", "99999999999999h"),
            ("SPOOL_DRAIN_TIMEOUT", "100000000000000000000"),
            ("SPOOL_DRAIN_TIMEOUT", "2000h"),
            ("SPOOL_SWEEP_INTERVAL", "0"),
            ("SPOOL_HEARTBEAT", "0ms"),
            ("SPOOL_REDIS_URL", "http://nope"),
            ("SPOOL_REDIS_URL", "redis://u:secret@h:notaport"),
        ];
        for (k, v) in cases {
            match cfg(&[(k, v)]) {
                Err(e) => {
                    assert_eq!(e.setting, k, "{k}={v}: {e}");
                    assert!(e.to_string().contains(k), "{e}");
                    assert!(!e.to_string().contains("secret"), "{e}");
                }
                Ok(_) => panic!("{k}={v} was accepted"),
            }
        }
    }
}
