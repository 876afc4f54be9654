//! Worker settings: one typed struct, defaults in one place, parsed once at
//! start-up from `SPOOL_*` variables (and, in binaries, flags), each error
//! naming the setting.

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
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("SPOOL_REDIS_URL") {
            c.redis_url = v;
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
        c.validate()?;
        Ok(c)
    }

    /// Checks values that only make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.concurrency == 0 {
            return Err(ConfigError {
                setting: "SPOOL_CONCURRENCY",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        spool_queue::Keys::new(&self.queue).map_err(|e| ConfigError {
            setting: "SPOOL_QUEUE",
            value: self.queue.clone(),
            reason: e.to_string(),
        })?;
        if let (Some(lease), Some(hb)) = (self.lease, self.heartbeat)
            && hb >= lease
        {
            return Err(ConfigError {
                setting: "SPOOL_HEARTBEAT",
                value: format!("{hb:?}"),
                reason: format!("must be shorter than SPOOL_LEASE ({lease:?}), ideally a third"),
            });
        }
        if let Some(ca) = &self.redis_ca_file
            && let Err(e) = std::fs::read(ca)
        {
            return Err(ConfigError {
                setting: "SPOOL_REDIS_CA_FILE",
                value: ca.display().to_string(),
                reason: format!("cannot read it: {e}"),
            });
        }
        if self.sweep_interval.is_zero() {
            return Err(ConfigError {
                setting: "SPOOL_SWEEP_INTERVAL",
                value: "0".into(),
                reason: "must be positive".into(),
            });
        }
        Ok(())
    }

    /// The queue client's options: the CA bundle when one is set.
    pub fn client_options(&self) -> Result<spool_queue::ClientOptions, ConfigError> {
        let tls_ca_pem = match &self.redis_ca_file {
            None => None,
            Some(p) => Some(std::fs::read(p).map_err(|e| ConfigError {
                setting: "SPOOL_REDIS_CA_FILE",
                value: p.display().to_string(),
                reason: format!("cannot read it: {e}"),
            })?),
        };
        Ok(spool_queue::ClientOptions {
            tls_ca_pem,
            ..spool_queue::ClientOptions::default()
        })
    }

    /// The heartbeat period for a job whose lease is `job_lease`.
    pub(crate) fn heartbeat_for(&self, job_lease: Duration) -> Duration {
        self.heartbeat
            .unwrap_or_else(|| self.lease.unwrap_or(job_lease) / 3)
            .max(Duration::from_millis(20))
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
        ];
        for (k, v) in cases {
            match cfg(&[(k, v)]) {
                Err(e) => {
                    assert_eq!(e.setting, k);
                    assert!(e.to_string().contains(k), "{e}");
                }
                Ok(_) => panic!("{k}={v} was accepted"),
            }
        }
    }
}
