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
