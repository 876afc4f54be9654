//! spool's `Worker` against BullMQ's `Worker`, like for like: one process
//! each, a no-op handler, the same concurrency, the same fresh
//! `redis-server`, in both persistence modes (no AOF; AOF `everysec`).
//!
//! `cargo bench -p spool-benches --bench runtime`. For each mode and each
//! system, N jobs are enqueued first (batches of 1,000), then the worker
//! process is started and the clock runs from its start until Redis counts
//! N completed (polled every 10 ms), at concurrency 50 and 200; each system
//! keeps its best. Redis CPU time per job (`INFO cpu` before and after) and
//! the commands per job (`INFO commandstats`) explain the difference.
//!
//! spool's side is the `sleep_worker` example (the reference embedding) with
//! `sleep_ms: 0`. BullMQ is installed with npm into `target/bench-bullmq`
//! on first use (Node and npm must be on PATH; the bench says so when not).
//! Settings: `SPOOL_BENCH_JOBS` (N, default 50,000).
//! The last line: `runtime aof_ratio=X noaof_ratio=Y` (spool's rate over
//! BullMQ's; target ≥ 1.5).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use spool_benches::setting;
use spool_queue::{Client, NewJob};
use spool_testkit::{RedisServer, ServerOptions, WorkerProcess, example_binary_release};

const CONCURRENCIES: [usize; 2] = [50, 200];

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

/// Redis CPU seconds (user + sys) and calls per command.
fn redis_cpu(server: &RedisServer) -> Result<(f64, BTreeMap<String, u64>)> {
    let mut c = server.connection()?;
    let cpu: String = redis::cmd("INFO").arg("cpu").query(&mut c)?;
    let secs: f64 = cpu
        .lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum();
    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut c)?;
    let mut calls = BTreeMap::new();
    for l in stats.lines() {
        if let Some(rest) = l.strip_prefix("cmdstat_")
            && let Some((name, fields)) = rest.split_once(':')
            && let Some(n) = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|v| v.parse().ok())
        {
            calls.insert(name.to_owned(), n);
        }
    }
    Ok((secs, calls))
}

fn zcard(server: &RedisServer, key: &str) -> Result<u64> {
    let mut c = server.connection()?;
    Ok(redis::cmd("ZCARD").arg(key).query(&mut c)?)
}

struct Run {
    rate: f64,
    cpu_per_job_us: f64,
    calls_per_job: BTreeMap<String, f64>,
}

fn fresh(aof: bool) -> Result<RedisServer> {
    let args: Vec<String> = if aof {
        vec!["--appendonly", "yes", "--appendfsync", "everysec"]
    } else {
        vec!["--appendonly", "no"]
    }
    .into_iter()
    .map(str::to_owned)
    .collect();
    Ok(RedisServer::start_with(ServerOptions {
        extra_args: args,
        ..ServerOptions::default()
    })?)
}

fn measure(
    server: &RedisServer,
    n: usize,
    completed_key: &str,
    start: impl FnOnce() -> Result<Box<dyn FnOnce()>>,
) -> Result<Run> {
    let (cpu0, calls0) = redis_cpu(server)?;
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
    let (cpu1, calls1) = redis_cpu(server)?;
    let calls_per_job = calls1
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - calls0.get(k).copied().unwrap_or(0)) as f64 / n as f64,
            )
        })
        .filter(|(_, v)| *v >= 0.01)
        .collect();
    Ok(Run {
        rate: n as f64 / secs,
        cpu_per_job_us: (cpu1 - cpu0) * 1e6 / n as f64,
        calls_per_job,
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

fn best(runs: Vec<(usize, Run)>) -> (usize, Run) {
    runs.into_iter()
        .max_by(|a, b| a.1.rate.total_cmp(&b.1.rate))
        .unwrap_or_else(|| unreachable!("two concurrencies ran"))
}

fn main() -> Result<()> {
    let n: usize = setting("SPOOL_BENCH_JOBS", 50_000);
    let dir = bullmq_dir()?;
    let bin = example_binary_release("spool-worker", "sleep_worker")?;
    let mut ratios = Vec::new();
    for aof in [false, true] {
        let mode = if aof { "aof everysec" } else { "no aof" };
        let mut spool = Vec::new();
        let mut bull = Vec::new();
        // Interleaved, so drift in the machine's load hits both.
        for c in CONCURRENCIES {
            spool.push((c, spool_run(n, aof, c, &bin)?));
            bull.push((c, bullmq_run(n, aof, c, &dir)?));
        }
        for (c, r) in spool.iter() {
            println!("{mode}: spool concurrency {c}: {:.0} jobs/s", r.rate);
        }
        for (c, r) in bull.iter() {
            println!("{mode}: bullmq concurrency {c}: {:.0} jobs/s", r.rate);
        }
        let (sc, s) = best(spool);
        let (bc, b) = best(bull);
        println!(
            "{mode}: spool {:.0} jobs/s (c={sc}), {:.1} µs Redis CPU/job, calls/job {:?}",
            s.rate, s.cpu_per_job_us, s.calls_per_job
        );
        println!(
            "{mode}: bullmq {:.0} jobs/s (c={bc}), {:.1} µs Redis CPU/job, calls/job {:?}",
            b.rate, b.cpu_per_job_us, b.calls_per_job
        );
        ratios.push(s.rate / b.rate);
    }
    println!(
        "runtime aof_ratio={:.2} noaof_ratio={:.2}",
        ratios[1], ratios[0]
    );
    Ok(())
}
