//! Every runtime setting, declared once: its variable, its flag, the
//! default the docs show, and its help. [`crate::WorkerArgs`] builds its flags
//! from this table (so no setting can lose its flag), the config reads
//! each through [`crate::WorkerConfig::from_lookup`], and tests hold the
//! table, the parser, the property tests and the docs' settings table
//! (docs/operations.md) to each other: a setting added in one place and not
//! the others fails CI.

/// One runtime setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Setting {
    /// The environment variable (`SPOOL_LEASE`).
    pub var: &'static str,
    /// The flag, without its dashes (`lease`).
    pub flag: &'static str,
    /// The default, as docs/operations.md states it.
    pub default: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
}

const fn s(
    var: &'static str,
    flag: &'static str,
    default: &'static str,
    help: &'static str,
) -> Setting {
    Setting {
        var,
        flag,
        default,
        help,
    }
}

/// Every setting of the runtime, in the order `--help` lists them.
pub const SETTINGS: [Setting; 17] = [
    s(
        "SPOOL_REDIS_URL",
        "redis-url",
        "`redis://127.0.0.1:6379`",
        "Redis URL; rediss:// for TLS, a comma-separated list for a cluster, redis+sentinel:// for Sentinel",
    ),
    s(
        "SPOOL_REDIS_CA_FILE",
        "redis-ca-file",
        "—",
        "A PEM CA bundle to trust for rediss:// (a private CA)",
    ),
    s(
        "SPOOL_REDIS_MIN_REPLICAS",
        "redis-min-replicas",
        "0",
        "Replicas that must have each settle before it returns (WAIT); 0 does not wait",
    ),
    s("SPOOL_QUEUE", "queue", "`encode`", "The queue to work"),
    s("SPOOL_CONCURRENCY", "concurrency", "1", "Jobs at once"),
    s(
        "SPOOL_LEASE",
        "lease",
        "each job's own (30 s by default)",
        "Lease each heartbeat grants (e.g. 30s)",
    ),
    s(
        "SPOOL_HEARTBEAT",
        "heartbeat",
        "a third of the lease",
        "Heartbeat period (default: a third of the lease)",
    ),
    s(
        "SPOOL_SWEEP_INTERVAL",
        "sweep-interval",
        "`5s`",
        "Sweep and queue-depth refresh period (e.g. 5s)",
    ),
    s(
        "SPOOL_DRAIN_TIMEOUT",
        "drain-timeout",
        "`25s`",
        "Time running jobs get after SIGTERM (e.g. 25s)",
    ),
    s(
        "SPOOL_METRICS_ADDR",
        "metrics-addr",
        "`0.0.0.0:9464`",
        "Address of /metrics, /healthz, /readyz, or `off`",
    ),
    s(
        "SPOOL_LOG_FORMAT",
        "log-format",
        "`text`",
        "`text` or `json`",
    ),
    s(
        "SPOOL_ALLOW_EVICTION",
        "allow-eviction",
        "`false`",
        "Start even when Redis may evict keys (which loses jobs): true or false",
    ),
    s(
        "SPOOL_MAX_JOBS",
        "max-jobs",
        "unset",
        "Take at most this many jobs, let them end, exit 0 (KEDA ScaledJob)",
    ),
    s(
        "SPOOL_IDLE_EXIT",
        "idle-exit",
        "unset",
        "Exit 0 after this long idle (nothing to reserve, nothing running)",
    ),
    s(
        "SPOOL_JOB_TIMEOUT",
        "job-timeout",
        "unset (no limit)",
        "Cancel and fail a handling that runs longer than this (e.g. 2h)",
    ),
    s(
        "SPOOL_JOB_TIMEOUT_RETRY",
        "job-timeout-retry",
        "`false`",
        "Retry a timed-out job instead of marking it dead: true or false",
    ),
    s(
        "SPOOL_MAX_JOB_TIMEOUT",
        "max-job-timeout",
        "unset (no cap)",
        "Cap every handling's time limit, whatever the job asks for (e.g. 8h)",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WorkerConfig;

    /// What the parser reads is exactly what the table declares.
    #[test]
    fn the_parser_reads_every_declared_setting_and_nothing_else() {
        let asked = std::sync::Mutex::new(std::collections::BTreeSet::new());
        let _ = WorkerConfig::from_lookup(|k| {
            asked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(k.to_owned());
            None
        });
        let asked = asked.into_inner().unwrap_or_else(|p| p.into_inner());
        let declared: std::collections::BTreeSet<String> =
            SETTINGS.iter().map(|s| s.var.to_owned()).collect();
        assert_eq!(asked, declared);
    }

    /// docs/operations.md has a row for each setting, with its default.
    #[test]
    fn the_operations_guide_lists_every_setting_with_its_default() -> Result<(), String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md");
        let doc = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let mut rows = std::collections::BTreeMap::new();
        for line in doc.lines() {
            let cells: Vec<&str> = line.split(" | ").collect();
            if let [first, default, ..] = cells[..]
                && let Some(var) = first.strip_prefix("| `").and_then(|v| v.strip_suffix('`'))
                && var.starts_with("SPOOL_")
            {
                rows.entry(var.to_owned()).or_insert(default.to_owned());
            }
        }
        for s in SETTINGS {
            match rows.get(s.var) {
                Some(d) if d == s.default => {}
                Some(d) => {
                    return Err(format!(
                        "docs/operations.md gives {} the default {d:?}; the code says {:?}",
                        s.var, s.default
                    ));
                }
                None => return Err(format!("docs/operations.md has no row for {}", s.var)),
            }
        }
        Ok(())
    }

    #[test]
    fn names_are_unique_and_flags_match_variables() {
        for (i, a) in SETTINGS.iter().enumerate() {
            assert_eq!(
                a.var.trim_start_matches("SPOOL_").to_ascii_lowercase(),
                a.flag.replace('-', "_"),
                "{}",
                a.var
            );
            assert!(SETTINGS[i + 1..].iter().all(|b| b.var != a.var));
        }
    }

    proptest::proptest! {
        /// Any string, in any setting: a value or an error naming that
        /// setting, never a panic.
        #[test]
        fn every_setting_parser_survives_any_string(
            which in 0usize..SETTINGS.len(),
            v in proptest::prelude::any::<String>(),
        ) {
            let k = SETTINGS[which].var;
            if let Err(e) = WorkerConfig::from_lookup(|q| (q == k).then(|| v.clone())) {
                proptest::prop_assert_eq!(e.setting, k);
            }
        }
    }
}
