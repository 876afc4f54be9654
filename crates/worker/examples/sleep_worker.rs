//! The reference embedding of `spool-worker`, and the worker the end-to-end and
//! scale tests drive as a real process.
//!
//! It reads the same `SPOOL_*` settings as `spool-encoder-worker` and handles
//! payloads like `{"sleep_ms": 500, "fail_times": 0, "panic": false, "crash": false}`:
//! sleep (cancellable), fail the first `fail_times` attempts, panic, or exit with
//! code 137 half-way through to play a killed pod; `"block_ms": n` first blocks a
//! thread for n ms ignoring cancellation (through `JobContext::run_blocking`, then
//! recorded as `unblocked`), as a handler that outlives its stop would; `"log": ["…"]` appends those
//! lines to the job's log first, and `"log_flood": n` n more (`line <i>`). When `SPOOL_SLEEP_RECORD`
//! names a file, each handler start, finish, stop (cancelled: drained or
//! lease lost) and unblocking is appended to it as a line `start|done|stop <job id> <attempt>
//! <pid> <unix ms>`, the record the tests check exactly-once against. A flow's
//! parent reads its children's results first, and its `done` line ends with
//! how many it read (`done <id> <attempt> <pid> <ms> <results>`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use spool_worker::{Handler, JobContext, JobError, LogLevel, Worker, WorkerConfig};

/// As `spool-encoder-worker` does, and as an embedding program may: a job's
/// life is many small allocations freed across threads, where glibc's
/// allocator spent about a tenth of a no-op job's worker CPU
/// (docs/performance.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepJob {
    #[serde(default = "default_sleep")]
    sleep_ms: u64,
    #[serde(default)]
    fail_times: u32,
    #[serde(default)]
    panic: bool,
    #[serde(default)]
    crash: bool,
    /// Lines for the job's log, written as the handler starts.
    #[serde(default)]
    log: Vec<String>,
    /// That many more log lines, as fast as possible.
    #[serde(default)]
    log_flood: u32,
    /// Milliseconds of blocking sleep before the cancellable one, through
    /// `run_blocking`, ignoring cancellation: reproduces a handler that
    /// outlives its stop (the slot must stay taken until it returns).
    #[serde(default)]
    block_ms: u64,
    /// Free-form tag, ignored (lets tests make payloads distinct).
    #[serde(default)]
    #[allow(dead_code)]
    tag: Option<serde_json::Value>,
}

fn default_sleep() -> u64 {
    500
}

struct Sleeper {
    record: Option<PathBuf>,
}

impl Sleeper {
    fn note(&self, what: &str, ctx: &JobContext) {
        self.note_with(what, ctx, "");
    }

    fn note_with(&self, what: &str, ctx: &JobContext, extra: &str) {
        let Some(path) = &self.record else { return };
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let line = format!(
            "{what} {} {} {} {ms}{extra}\n",
            ctx.id,
            ctx.attempt,
            std::process::id()
        );
        // One write per line with O_APPEND: lines from many processes never interleave.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            tracing::error!(error = %e, path = %path.display(), "cannot write the record");
        }
    }
}

impl Handler for Sleeper {
    type Payload = SleepJob;

    async fn handle(
        &self,
        job: SleepJob,
        ctx: JobContext,
    ) -> Result<Option<serde_json::Value>, JobError> {
        self.note("start", &ctx);
        let results = if ctx.child_count() > 0 {
            let children = ctx.children().await?;
            Some(children.iter().filter(|c| c.completed()).count())
        } else {
            None
        };
        for line in &job.log {
            ctx.log(LogLevel::Info, line);
        }
        for i in 0..job.log_flood {
            ctx.log(LogLevel::Warning, format_args!("line {i}"));
        }
        if job.block_ms > 0 {
            let block = Duration::from_millis(job.block_ms);
            ctx.run_blocking(move |_ignored| std::thread::sleep(block))
                .await?;
            self.note("unblocked", &ctx);
        }
        let total = Duration::from_millis(job.sleep_ms);
        if job.crash {
            tokio::time::sleep(total / 2).await;
            std::process::exit(137);
        }
        if job.panic {
            panic!("sleep_worker was asked to panic");
        }
        let started = std::time::Instant::now();
        let mut step = tokio::time::interval(Duration::from_millis(100));
        loop {
            let left = total.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(left) => {},
                _ = step.tick() => {
                    let percent = 100 * started.elapsed().as_millis() / total.as_millis().max(1);
                    ctx.progress(serde_json::json!({ "percent": percent.min(100) }));
                },
                _ = ctx.cancelled() => {
                    self.note("stop", &ctx);
                    return Err(JobError::retryable("cancelled"));
                }
            }
        }
        if ctx.attempt <= job.fail_times {
            return Err(JobError::retryable(format!(
                "failing attempt {} of the first {} on purpose",
                ctx.attempt, job.fail_times
            )));
        }
        match results {
            Some(n) => {
                self.note_with("done", &ctx, &format!(" {n}"));
                Ok(Some(
                    serde_json::json!({ "slept_ms": job.sleep_ms, "children_results": n }),
                ))
            }
            None => {
                self.note("done", &ctx);
                Ok(Some(serde_json::json!({ "slept_ms": job.sleep_ms })))
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let config = match WorkerConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sleep_worker: {e}");
            std::process::exit(2);
        }
    };
    spool_worker::init_logging(config.log_format);
    let record = std::env::var_os("SPOOL_SLEEP_RECORD").map(PathBuf::from);
    let worker = match Worker::builder(Sleeper { record }).config(config).build() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("sleep_worker: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = worker.run().await {
        tracing::error!(error = %e, "worker failed");
        std::process::exit(if e.is_bad_setting() { 2 } else { 1 });
    }
}
