//! Shared bits of the benchmarks in `benches/`.

/// A numeric benchmark setting from the environment, or `default`.
pub fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A Redis server of its own for one measurement: with AOF (`everysec`, and
/// no automatic rewrite, which would reset `aof_current_size` mid-run and
/// spend CPU in a child) or with no persistence at all.
pub fn fresh_redis(aof: bool) -> spool_testkit::Result<spool_testkit::RedisServer> {
    let args: &[&str] = if aof {
        &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--auto-aof-rewrite-percentage",
            "0",
        ]
    } else {
        &["--appendonly", "no"]
    };
    spool_testkit::RedisServer::start_with(spool_testkit::ServerOptions {
        extra_args: args.iter().map(|s| (*s).to_owned()).collect(),
        ..spool_testkit::ServerOptions::default()
    })
}

/// The `INFO <section>` line `field:value` of `server`, parsed.
pub fn info_field<T: std::str::FromStr>(
    server: &spool_testkit::RedisServer,
    section: &str,
    field: &str,
) -> Option<T> {
    let mut c = server.connection().ok()?;
    let info: String = redis::cmd("INFO").arg(section).query(&mut c).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// What the Redis process has spent so far: CPU seconds (user + sys, every
/// thread), and per command the calls and microseconds `INFO commandstats`
/// counts.
#[derive(Debug, Clone, Default)]
pub struct RedisUsage {
    /// `used_cpu_user` + `used_cpu_sys`.
    pub cpu_s: f64,
    /// Calls per command (`evalsha`, `hset`, …).
    pub calls: std::collections::BTreeMap<String, u64>,
    /// Microseconds per command.
    pub usec: std::collections::BTreeMap<String, u64>,
}

/// Reads [`RedisUsage`] from `server` (`INFO cpu`, `INFO commandstats`).
pub fn redis_usage(server: &spool_testkit::RedisServer) -> spool_testkit::Result<RedisUsage> {
    let mut c = server.connection()?;
    let info = |section: &str, c: &mut redis::Connection| -> Option<String> {
        redis::cmd("INFO").arg(section).query(c).ok()
    };
    let cpu_s = info("cpu", &mut c)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum();
    let mut u = RedisUsage {
        cpu_s,
        ..RedisUsage::default()
    };
    for l in info("commandstats", &mut c).unwrap_or_default().lines() {
        let Some((name, fields)) = l.strip_prefix("cmdstat_").and_then(|r| r.split_once(':'))
        else {
            continue;
        };
        let field = |key: &str| {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(key))
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let Some(n) = field("calls=") {
            u.calls.insert(name.to_owned(), n);
        }
        if let Some(n) = field("usec=") {
            u.usec.insert(name.to_owned(), n);
        }
    }
    Ok(u)
}
