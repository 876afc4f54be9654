//! spool's `Worker` against BullMQ's `Worker`, like for like: one process
//! each, a no-op handler, the same concurrency, a fresh `redis-server` per
//! run, in both persistence modes (no AOF; AOF `everysec`).
//!
//! `cargo bench -p spool-benches --bench runtime`. Each run enqueues N jobs
//! first (batches of 1,000), then starts the worker process; the clock runs
//! from its start until Redis counts N completed (polled every 10 ms). The
//! two systems alternate in interleaved rounds (spool first in even rounds,
//! BullMQ first in odd ones), so the machine's drift hits both; each mode
//! reports the median and spread of throughput over the rounds.
//!
//! The headline is **Redis CPU per job** (`INFO cpu` of the Redis process,
//! user + sys, before and after the run), which does not depend on how busy
//! the rest of the machine is the way throughput does; beside it the
//! commands and each command's µs per job (`INFO commandstats`; a script's
//! µs include the commands it runs) and, with AOF, the bytes appended
//! to the AOF per job (`aof_current_size`).
//!
//! spool's side is the `sleep_worker` example (the reference embedding) with
//! `sleep_ms: 0`. BullMQ is installed with npm into `target/bench-bullmq`
//! on first use (Node and npm must be on PATH; the bench says so when not).
//! Settings: `SPOOL_BENCH_JOBS` (N, default 50,000), `SPOOL_BENCH_ROUNDS`
//! (default 5), `SPOOL_BENCH_CONCURRENCY` (both systems, default 200).
//! The last line: `runtime aof_ratio=X noaof_ratio=Y aof_us_per_job=A
//! noaof_us_per_job=B bullmq_aof_us_per_job=C bullmq_noaof_us_per_job=D`
//! (median rates' ratio; spool's and BullMQ's median Redis µs per job).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use spool_benches::setting;
use spool_queue::{Client, NewJob};
use spool_testkit::{RedisServer, WorkerProcess, example_binary_release};

fn bullmq_dir() -> Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("target/bench-bullmq");
    if dir.join("node_modules/bullmq/package.json").exists() {
        return Ok(dir);
    }
    for tool in ["node", "npm"] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        ensure!(
            ok,
            "{tool} is not installed: the runtime benchmark runs BullMQ's Worker under Node (scripts/deps.sh installs nodejs and npm)"
        );
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("package.json"),
        r#"{"name":"spool-bench-bullmq","private":true,"type":"module"}"#,
    )?;
    let st = Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund", "bullmq@5"])
        .current_dir(&dir)
        .status()?;
    ensure!(st.success(), "npm install bullmq failed");
    Ok(dir)
}

/// Redis CPU seconds (user + sys), and calls and microseconds per command.
fn redis_cpu(server: &RedisServer) -> Result<spool_benches::RedisUsage> {
    Ok(spool_benches::redis_usage(server)?)
}

/// Per job, what each command's counter in `after` grew by since `before`
/// (those at 0.01 or more).
fn per_job(
    after: &BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
    n: usize,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)) as f64 / n as f64,
            )
        })
        .filter(|(_, v)| *v >= 0.01)
        .collect()
}

fn zcard(server: &RedisServer, key: &str) -> Result<u64> {
    let mut c = server.connection()?;
    Ok(redis::cmd("ZCARD").arg(key).query(&mut c)?)
}

struct Run {
    rate: f64,
    cpu_per_job_us: f64,
    calls_per_job: BTreeMap<String, f64>,
    /// Microseconds per job of each command (`INFO commandstats`; a
    /// script's own figure includes the commands it runs).
    usec_per_job: BTreeMap<String, f64>,
    /// Bytes appended to the AOF per job (0 without AOF).
    aof_bytes_per_job: f64,
}

/// The AOF's size in bytes (0 without AOF).
fn aof_size(server: &RedisServer) -> Result<u64> {
    Ok(spool_benches::info_field(server, "persistence", "aof_current_size").unwrap_or(0))
}

fn fresh(aof: bool) -> Result<RedisServer> {
    Ok(spool_benches::fresh_redis(aof)?)
}

fn measure(
    server: &RedisServer,
    n: usize,
    completed_key: &str,
    start: impl FnOnce() -> Result<Box<dyn FnOnce()>>,
) -> Result<Run> {
    let before = redis_cpu(server)?;
    let aof0 = aof_size(server)?;
    let t = Instant::now();
    let stop = start()?;
    loop {
        if zcard(server, completed_key)? >= n as u64 {
            break;
        }
        if t.elapsed() > Duration::from_secs(600) {
            stop();
            bail!("{completed_key}: not done in 600 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let secs = t.elapsed().as_secs_f64();
    stop();
    let after = redis_cpu(server)?;
    let aof1 = aof_size(server)?;
    Ok(Run {
        rate: n as f64 / secs,
        cpu_per_job_us: (after.cpu_s - before.cpu_s) * 1e6 / n as f64,
        calls_per_job: per_job(&after.calls, &before.calls, n),
        usec_per_job: per_job(&after.usec, &before.usec, n),
        aof_bytes_per_job: aof1.saturating_sub(aof0) as f64 / n as f64,
    })
}

fn spool_run(n: usize, aof: bool, concurrency: usize, bin: &Path) -> Result<Run> {
    let server = fresh(aof)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let q = Client::connect(&server.url()).await?.queue("bench")?;
        let mut left = n;
        while left > 0 {
            let k = left.min(1000);
            q.enqueue_batch(
                (0..k)
                    .map(|_| NewJob::new(br#"{"sleep_ms":0}"#.to_vec()))
                    .collect(),
            )
            .await?;
            left -= k;
        }
        anyhow::Ok(())
    })?;
    let c = concurrency.to_string();
    measure(&server, n, "spool:{bench}:completed", || {
        let mut w = WorkerProcess::spawn(
            bin,
            &server.url(),
            &[
                ("SPOOL_QUEUE", "bench"),
                ("SPOOL_CONCURRENCY", &c),
                ("RUST_LOG", "warn"),
            ],
        )?;
        Ok(Box::new(move || w.kill()))
    })
}

fn bullmq_run(n: usize, aof: bool, concurrency: usize, dir: &Path) -> Result<Run> {
    let server = fresh(aof)?;
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    let port = server.port().to_string();
    for f in ["bullmq_fill.mjs", "bullmq_worker.mjs"] {
        std::fs::copy(scripts.join(f), dir.join(f))?;
    }
    let st = Command::new("node")
        .args(["bullmq_fill.mjs", &port, "bench", &n.to_string()])
        .current_dir(dir)
        .status()?;
    ensure!(st.success(), "filling the BullMQ queue failed");
    let c = concurrency.to_string();
    measure(&server, n, "bull:bench:completed", || {
        let mut child = Command::new("node")
            .args(["bullmq_worker.mjs", &port, "bench", &c])
            .current_dir(dir)
            .stdout(Stdio::null())
            .spawn()
            .context("starting node")?;
        Ok(Box::new(move || {
            let _ = child.kill();
            let _ = child.wait();
        }))
    })
}

/// The median and the range of `f` over the runs.
fn spread(runs: &[Run], f: impl Fn(&Run) -> f64) -> (f64, f64, f64) {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    (median, v[0], v[v.len() - 1])
}

/// The run whose rate is the median's (for its calls per job).
fn median_run(runs: &[Run]) -> &Run {
    let (m, _, _) = spread(runs, |r| r.rate);
    runs.iter()
        .min_by(|a, b| (a.rate - m).abs().total_cmp(&(b.rate - m).abs()))
        .unwrap_or_else(|| unreachable!("at least one round ran"))
}

fn main() -> Result<()> {
    let n: usize = setting("SPOOL_BENCH_JOBS", 50_000);
    let rounds: usize = setting("SPOOL_BENCH_ROUNDS", 5).max(1);
    let c: usize = setting("SPOOL_BENCH_CONCURRENCY", 200);
    let dir = bullmq_dir()?;
    let bin = example_binary_release("spool-worker", "sleep_worker")?;
    let mut last = Vec::new();
    for aof in [false, true] {
        let mode = if aof { "aof everysec" } else { "no aof" };
        let mut spool = Vec::new();
        let mut bull = Vec::new();
        for round in 0..rounds {
            // Interleaved, and each system first every other round, so
            // drift in the machine's load hits both alike.
            if round % 2 == 0 {
                spool.push(spool_run(n, aof, c, &bin)?);
                bull.push(bullmq_run(n, aof, c, &dir)?);
            } else {
                bull.push(bullmq_run(n, aof, c, &dir)?);
                spool.push(spool_run(n, aof, c, &bin)?);
            }
            println!(
                "{mode}: round {}: spool {:.0} jobs/s {:.1} µs/job, bullmq {:.0} jobs/s {:.1} µs/job",
                round + 1,
                spool[round].rate,
                spool[round].cpu_per_job_us,
                bull[round].rate,
                bull[round].cpu_per_job_us
            );
        }
        for (name, runs) in [("spool", &spool), ("bullmq", &bull)] {
            let (rate, lo, hi) = spread(runs, |r| r.rate);
            let (us, us_lo, us_hi) = spread(runs, |r| r.cpu_per_job_us);
            let (bytes, _, _) = spread(runs, |r| r.aof_bytes_per_job);
            println!(
                "{mode}: {name}: Redis CPU {us:.1} µs/job (range {us_lo:.1}–{us_hi:.1}), \
                 {rate:.0} jobs/s (range {lo:.0}–{hi:.0}), {bytes:.0} AOF bytes/job, \
                 calls/job {:?}, µs/job by command {:?}",
                median_run(runs).calls_per_job,
                median_run(runs).usec_per_job
            );
        }
        let ratio = spread(&spool, |r| r.rate).0 / spread(&bull, |r| r.rate).0;
        last.push((
            ratio,
            spread(&spool, |r| r.cpu_per_job_us).0,
            spread(&bull, |r| r.cpu_per_job_us).0,
        ));
    }
    println!(
        "runtime aof_ratio={:.2} noaof_ratio={:.2} aof_us_per_job={:.1} noaof_us_per_job={:.1} \
         bullmq_aof_us_per_job={:.1} bullmq_noaof_us_per_job={:.1}",
        last[1].0, last[0].0, last[1].1, last[0].1, last[1].2, last[0].2
    );
    Ok(())
}
