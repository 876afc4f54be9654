//! `spoolctl`: the operator and script CLI for spool queues.
//!
//! Output shapes are an interface (the README and docs/operations.md): `enqueue` prints one id a
//! line in input order, `inspect --json` and `stats --json` print one JSON
//! object (a line per queue for `stats`). Exit codes: 0 success, 1 runtime
//! failure (Redis unreachable, a watched job failed), 2 bad usage or input.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use spool_queue::{
    CancelOutcome, Client, Error as QueueError, JobInfo, JobOptions, JobState, NewJob, Queue,
};

/// How long `watch` keeps retrying while Redis is unreachable before it gives
/// up (a failover or a restart with AOF takes seconds).
const WATCH_OUTAGE: Duration = Duration::from_secs(60);
/// Jobs sent per enqueue call when reading NDJSON from stdin.
const STDIN_BATCH: usize = 1000;
/// The queue when none is named.
const DEFAULT_QUEUE: &str = "encode";
/// How often `watch` polls the job.
const WATCH_POLL: Duration = Duration::from_millis(250);

#[derive(Parser)]
#[command(name = "spoolctl", version, about = "Operate spool job queues")]
struct Cli {
    /// Redis URL (`redis://[user:password@]host[:port][/db]`, `rediss://` for TLS).
    #[arg(
        long,
        env = "SPOOL_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true
    )]
    redis_url: String,
    /// A PEM CA bundle to trust for `rediss://` (a private CA).
    #[arg(long, env = "SPOOL_REDIS_CA_FILE", global = true)]
    redis_ca_file: Option<std::path::PathBuf>,
    /// The queue (default `encode`; `stats` without it shows every queue).
    #[arg(long, short, env = "SPOOL_QUEUE", global = true)]
    queue: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enqueue JSON jobs; prints one id a line, in input order.
    Enqueue(EnqueueArgs),
    /// Enqueue an encode job (see docs/encode-jobs.md) without writing JSON.
    Encode(EncodeArgs),
    /// Queue depth by state: every known queue, or only --queue when given.
    Stats {
        /// One JSON object per queue, a line each.
        #[arg(long)]
        json: bool,
    },
    /// Everything stored about a job.
    Inspect {
        /// The job id.
        id: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Follow a job's progress until it ends; exits 1 unless it completed.
    Watch {
        /// The job id.
        id: String,
    },
    /// Cancel a job (at once when waiting, at its next heartbeat when running).
    Cancel {
        /// The job id.
        id: String,
    },
    /// The dead-letter set.
    Dead {
        #[command(subcommand)]
        action: DeadAction,
    },
    /// Replay a load profile against a ScaledObject's settings (needs no Redis).
    Simulate(SimulateArgs),
    /// Find jobs out of place (a deleted or damaged index, a job in no index);
    /// exits 1 when something is wrong and was not repaired.
    Check {
        /// Fix what is found: each job goes back where its state says.
        #[arg(long)]
        repair: bool,
        /// With --repair: only say what would be fixed.
        #[arg(long, requires = "repair")]
        dry_run: bool,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The queue's Redis keys (for manifests, ACLs and redis-cli); needs no Redis.
    Keys {
        /// One JSON object: `{"queue", "backlog", "outstanding", …}`.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct EnqueueArgs {
    /// One JSON payload.
    #[arg(long, conflicts_with_all = ["file", "source"])]
    payload: Option<String>,
    /// A file holding one JSON payload.
    #[arg(long, conflicts_with = "source")]
    file: Option<std::path::PathBuf>,
    /// `-`: NDJSON on stdin, one job a line, sent in batches.
    #[arg(value_name = "-")]
    source: Option<String>,
    /// Priority, -1000..=1000 (higher first).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    priority: i32,
    /// Delay before the job may run (`30s`, `5m`, or seconds).
    #[arg(long)]
    delay: Option<String>,
    /// Attempts allowed, counting the first.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// While a job with this key is live, enqueueing returns its id instead.
    #[arg(long)]
    dedup_key: Option<String>,
}

#[derive(clap::Args)]
struct EncodeArgs {
    /// The input, relative to the worker's input root.
    input: String,
    /// The output name, relative to the worker's output root.
    #[arg(long)]
    out: String,
    /// h264, hevc or av1.
    #[arg(long, default_value = "h264")]
    codec: String,
    /// Output heights; several make a ladder (`--height 1080 --height 720`).
    #[arg(long)]
    height: Vec<u32>,
    /// Target bitrate in kbit/s (one per height, or one for all).
    #[arg(long, conflicts_with = "quality")]
    bitrate: Vec<u32>,
    /// Constant quality (CRF/CQ).
    #[arg(long)]
    quality: Option<u32>,
    /// fastest, fast, medium, slow or slowest.
    #[arg(long, default_value = "medium")]
    preset: String,
    /// HLS instead of MP4 (segment length in seconds).
    #[arg(long, num_args = 0..=1, default_missing_value = "6")]
    hls: Option<f64>,
    /// auto, nvenc or cpu.
    #[arg(long, default_value = "auto")]
    hw: String,
    /// Audio: aac, copy or none.
    #[arg(long, default_value = "aac")]
    audio: String,
    /// Priority, -1000..=1000.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    priority: i32,
}

/// Builds the encode spec JSON from flags. The worker validates it fully; this
/// catches the obvious mistakes before anything is enqueued.
fn encode_spec(a: &EncodeArgs) -> Result<serde_json::Value, Failure> {
    if !["h264", "hevc", "av1"].contains(&a.codec.as_str()) {
        return Err(usage(format!(
            "invalid --codec {:?}: use h264, hevc or av1",
            a.codec
        )));
    }
    if !["auto", "nvenc", "cpu"].contains(&a.hw.as_str()) {
        return Err(usage(format!(
            "invalid --hw {:?}: use auto, nvenc or cpu",
            a.hw
        )));
    }
    if a.bitrate.len() > 1 && a.bitrate.len() != a.height.len() {
        return Err(usage("give one --bitrate, or one per --height"));
    }
    let heights: Vec<Option<u32>> = if a.height.is_empty() {
        vec![None]
    } else {
        a.height.iter().copied().map(Some).collect()
    };
    let renditions: Vec<serde_json::Value> = heights
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut r = serde_json::json!({ "codec": a.codec, "preset": a.preset });
            if let Some(h) = h {
                r["height"] = (*h).into();
            }
            if let Some(b) = a.bitrate.get(i).or(a.bitrate.first()) {
                r["bitrate_kbps"] = (*b).into();
            }
            if let Some(q) = a.quality {
                r["quality"] = q.into();
            }
            r
        })
        .collect();
    let audio = match a.audio.as_str() {
        "aac" => serde_json::json!({ "mode": "aac" }),
        "copy" => serde_json::json!({ "mode": "copy" }),
        "none" => serde_json::json!({ "mode": "none" }),
        other => {
            return Err(usage(format!(
                "invalid --audio {other:?}: use aac, copy or none"
            )));
        }
    };
    let container = match a.hls {
        Some(seg) => serde_json::json!({ "format": "hls", "segment_s": seg }),
        None => serde_json::json!({ "format": "mp4" }),
    };
    Ok(serde_json::json!({
        "input": a.input, "output": a.out, "renditions": renditions,
        "audio": audio, "container": container, "hardware": a.hw,
    }))
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// A manifest holding the ScaledObject (and the Deployment, for its grace
    /// period): a component file or `kubectl kustomize` output.
    #[arg(long)]
    manifest: std::path::PathBuf,
    /// A built-in load: burst, long, ramp or diurnal.
    #[arg(long, default_value = "burst", conflicts_with = "load")]
    profile: String,
    /// A CSV load instead: `arrival_s,duration_s` per line.
    #[arg(long)]
    load: Option<std::path::PathBuf>,
    /// Override the metric the trigger reads: outstanding or backlog.
    #[arg(long)]
    metric: Option<String>,
    /// Seconds from scheduling a pod to its readiness.
    #[arg(long, default_value_t = 30.0)]
    pod_start: f64,
    /// Drain timeout; default: the grace period minus 5 s.
    #[arg(long)]
    drain_timeout: Option<f64>,
    /// Jobs per pod; default: the trigger's listLength.
    #[arg(long)]
    slots: Option<u32>,
    /// Write an SVG plot of backlog, outstanding work and replicas.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
}

fn simulate(a: &SimulateArgs) -> Result<(), Failure> {
    use spool_autoscale::sim::{self, Arrival, FleetSpec, Metric};
    let text = std::fs::read_to_string(&a.manifest).map_err(|e| {
        usage(format!(
            "cannot read --manifest {}: {e}",
            a.manifest.display()
        ))
    })?;
    let scaling = spool_autoscale::manifest::parse(&text)
        .map_err(|e| usage(format!("{}: {e}", a.manifest.display())))?;
    let metric = match a.metric.as_deref() {
        None => scaling.metric,
        Some("outstanding") => Metric::Outstanding,
        Some("backlog") => Metric::Backlog,
        Some(other) => {
            return Err(usage(format!(
                "invalid --metric {other:?}: use outstanding or backlog"
            )));
        }
    };
    let (load, horizon) = match &a.load {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| usage(format!("cannot read --load {}: {e}", path.display())))?;
            let mut load = Vec::new();
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') || line.starts_with("arrival") {
                    continue;
                }
                let parsed = line.split_once(',').and_then(|(t, d)| {
                    Some(Arrival {
                        at_s: t.trim().parse().ok()?,
                        duration_s: d.trim().parse().ok()?,
                    })
                });
                load.push(parsed.ok_or_else(|| {
                    usage(format!(
                        "--load line {}: expected arrival_s,duration_s",
                        i + 1
                    ))
                })?);
            }
            let end = load
                .iter()
                .map(|a| a.at_s + a.duration_s)
                .fold(0.0, f64::max);
            (load, end * 1.5 + 600.0)
        }
        None => sim::profile(&a.profile).ok_or_else(|| {
            usage(format!(
                "unknown --profile {:?}: use burst, long, ramp or diurnal",
                a.profile
            ))
        })?,
    };
    let fleet = FleetSpec {
        slots: a.slots.unwrap_or(scaling.spec.target.max(1.0) as u32),
        pod_start_s: a.pod_start,
        drain_s: a.drain_timeout.unwrap_or((scaling.grace_s - 5.0).max(0.0)),
        initial: scaling.spec.min,
    };
    let r = sim::simulate(scaling.spec.clone(), &fleet, metric, &load, horizon);
    let peak_backlog = r.samples.iter().map(|s| s.backlog).max().unwrap_or(0);
    let peak_replicas = r.samples.iter().map(|s| s.replicas).max().unwrap_or(0);
    println!(
        "metric {:?}, {} jobs per pod, pod start {} s, drain {} s",
        metric, fleet.slots, fleet.pod_start_s, fleet.drain_s
    );
    println!(
        "jobs {} completed {} released {}",
        load.len(),
        r.completed,
        r.released
    );
    println!(
        "peak backlog {peak_backlog}, peak replicas {peak_replicas}, direction changes {}",
        r.direction_changes
    );
    println!(
        "wait p50 {:.0} s, p95 {:.0} s, p99 {:.0} s; replica-minutes {:.0}",
        r.wait_quantile(0.5),
        r.wait_quantile(0.95),
        r.wait_quantile(0.99),
        r.replica_minutes
    );
    if let Some(path) = &a.plot {
        let title = format!(
            "{} — {:?} metric, listLength {}",
            a.manifest.display(),
            metric,
            scaling.spec.target
        );
        spool_autoscale::plot::plot_svg(path, &title, &r.samples).map_err(|e| Failure {
            code: 1,
            message: e,
        })?;
        println!("plot: {}", path.display());
    }
    Ok(())
}

#[derive(Subcommand)]
enum DeadAction {
    /// List dead jobs, newest first.
    List {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Put dead jobs back in the backlog with fresh attempts.
    Retry {
        /// These ids (default: the oldest --limit).
        ids: Vec<String>,
        /// How many when no ids are given.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Delete dead jobs.
    Purge {
        /// These ids (default: the oldest --limit).
        ids: Vec<String>,
        /// How many when no ids are given.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

/// A failure with the exit code it deserves.
struct Failure {
    code: u8,
    message: String,
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

impl From<QueueError> for Failure {
    fn from(e: QueueError) -> Self {
        let code = match e {
            QueueError::NotFound { .. }
            | QueueError::InvalidOption { .. }
            | QueueError::InvalidQueueName { .. }
            | QueueError::InvalidUrl { .. }
            | QueueError::PayloadTooLarge { .. } => 2,
            _ => 1,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(f) => {
            eprintln!("spoolctl: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let name = cli.queue.as_deref().unwrap_or(DEFAULT_QUEUE);
    match &cli.command {
        Command::Keys { json } => {
            print_keys(&spool_queue::Keys::new(name)?, name, *json);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Simulate(args) => {
            simulate(args)?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let mut options = spool_queue::ClientOptions::default();
    if let Some(ca) = &cli.redis_ca_file {
        options.tls_ca_pem =
            Some(std::fs::read(ca).map_err(|e| {
                usage(format!("cannot read --redis-ca-file {}: {e}", ca.display()))
            })?);
    }
    let client = Client::connect_with(&cli.redis_url, options).await?;
    let queue = client.queue(cli.queue.as_deref().unwrap_or(DEFAULT_QUEUE))?;
    match cli.command {
        Command::Enqueue(args) => enqueue(&queue, args).await?,
        Command::Encode(args) => {
            let spec = encode_spec(&args)?;
            let opts = JobOptions::default().priority(args.priority);
            println!("{}", queue.enqueue(spec.to_string(), opts).await?);
        }
        Command::Stats { json } => stats(&client, cli.queue.as_deref(), json).await?,
        Command::Inspect { id, json } => inspect(&queue, &id, json).await?,
        Command::Watch { id } => return watch(&queue, &id).await,
        Command::Cancel { id } => match queue.cancel(&id).await? {
            CancelOutcome::Cancelled => println!("cancelled {id}"),
            CancelOutcome::Requested => {
                println!("cancel requested for {id}: its worker stops it at the next heartbeat")
            }
            CancelOutcome::AlreadyFinished(s) => println!("{id} had already ended: {s}"),
        },
        Command::Dead { action } => dead(&queue, action).await?,
        Command::Check {
            repair,
            dry_run,
            json,
        } => return check(&queue, repair && !dry_run, json).await,
        Command::Keys { .. } | Command::Simulate(_) => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn print_keys(k: &spool_queue::Keys, queue: &str, json: bool) {
    if json {
        let v = serde_json::json!({
            "queue": queue,
            "backlog": k.ready,
            "outstanding": k.outstanding,
            "scheduled": k.scheduled,
            "active": k.active,
            "dead": k.dead,
            "completed": k.completed,
            "cancelled": k.cancelled,
            "job": k.job("<id>"),
        });
        println!("{v}");
        return;
    }
    println!("backlog (ZSET, KEDA ZCARD)            {}", k.ready);
    println!("outstanding work (SET, KEDA SCARD)    {}", k.outstanding);
    println!("scheduled (ZSET)                      {}", k.scheduled);
    println!("active leases (ZSET)                  {}", k.active);
    println!("dead letters (ZSET)                   {}", k.dead);
    println!("completed, retained (ZSET)            {}", k.completed);
    println!("cancelled, retained (ZSET)            {}", k.cancelled);
    println!("job hashes                            {}", k.job("<id>"));
}

fn options(args: &EnqueueArgs) -> Result<JobOptions, Failure> {
    let mut o = JobOptions::default().priority(args.priority);
    if let Some(d) = &args.delay {
        o = o.delay(parse_delay(d)?);
    }
    if let Some(n) = args.max_attempts {
        o = o.max_attempts(n);
    }
    if let Some(k) = &args.dedup_key {
        o = o.dedup_key(k.clone());
    }
    o.validate()?;
    Ok(o)
}

fn parse_delay(v: &str) -> Result<Duration, Failure> {
    spool_queue::parse_duration(v).ok_or_else(|| {
        usage(format!(
            "invalid --delay {v:?}: use 30s, 500ms, 5m or seconds"
        ))
    })
}

fn check_json(text: &str, what: &str) -> Result<Vec<u8>, Failure> {
    serde_json::from_str::<serde_json::Value>(text)
        .map_err(|e| usage(format!("{what} is not valid JSON: {e}")))?;
    Ok(text.trim().as_bytes().to_vec())
}

async fn enqueue(queue: &Queue, args: EnqueueArgs) -> Result<(), Failure> {
    let opts = options(&args)?;
    let single = match (&args.payload, &args.file, args.source.as_deref()) {
        (Some(p), _, _) => Some(check_json(p, "--payload")?),
        (None, Some(f), _) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| usage(format!("cannot read --file {}: {e}", f.display())))?;
            Some(check_json(&text, &format!("{}", f.display()))?)
        }
        (None, None, Some("-")) => None,
        (None, None, Some(other)) => {
            return Err(usage(format!(
                "unexpected argument {other:?}: use `-` for NDJSON on stdin"
            )));
        }
        (None, None, None) => {
            return Err(usage(
                "give --payload JSON, --file PATH, or `-` for NDJSON on stdin",
            ));
        }
    };
    if let Some(payload) = single {
        println!("{}", queue.enqueue(payload, opts).await?);
        return Ok(());
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("spoolctl: reading NDJSON jobs from the terminal; end with Ctrl-D");
    }
    // Check every line (JSON, size, options) before sending any, so bad
    // input enqueues nothing.
    let mut jobs = Vec::new();
    for (i, line) in stdin.lock().lines().enumerate() {
        let line = line.map_err(|e| usage(format!("cannot read stdin: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let what = format!("line {}", i + 1);
        let payload = check_json(&line, &what)?;
        let job = NewJob::with_options(payload, opts.clone());
        queue
            .check_job(&job)
            .map_err(|e| usage(format!("{what}: {e}; nothing was enqueued")))?;
        jobs.push(job);
    }
    // A failure part-way (Redis lost) leaves exactly the printed ids enqueued.
    let mut sent = 0usize;
    for chunk in jobs.chunks(STDIN_BATCH) {
        match queue.enqueue_batch(chunk.to_vec()).await {
            Ok(ids) => {
                for id in ids {
                    println!("{id}");
                }
                sent += chunk.len();
            }
            Err(e) => {
                eprintln!(
                    "spoolctl: {sent} of {} jobs were enqueued (their ids are printed above); the rest were not",
                    jobs.len()
                );
                return Err(e.into());
            }
        }
    }
    Ok(())
}

async fn stats(client: &Client, only: Option<&str>, json: bool) -> Result<(), Failure> {
    let names = match only {
        Some(q) => vec![q.to_owned()],
        None => {
            let mut n = client.queues().await?;
            if n.is_empty() {
                n.push(DEFAULT_QUEUE.to_owned());
            }
            n
        }
    };
    if !json {
        println!(
            "{:<24} {:>9} {:>9} {:>9} {:>11} {:>9} {:>10} {:>9}",
            "QUEUE",
            "READY",
            "SCHEDULED",
            "ACTIVE",
            "OUTSTANDING",
            "DEAD",
            "COMPLETED",
            "CANCELLED"
        );
    }
    // One queue that cannot be read (a bad name registered by hand, a
    // damaged key) is reported, and the others are still shown.
    let mut failed = Vec::new();
    for name in names {
        let s = match client.queue(&name) {
            Ok(q) => q.stats().await,
            Err(e) => Err(e),
        };
        let s = match s {
            Ok(s) => s,
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "queue": name, "error": e.to_string() })
                    );
                } else {
                    println!("{name:<24} error: {e}");
                }
                failed.push(name);
                continue;
            }
        };
        if json {
            println!("{}", serde_json::to_string(&s).unwrap_or_default());
        } else {
            println!(
                "{:<24} {:>9} {:>9} {:>9} {:>11} {:>9} {:>10} {:>9}",
                s.queue,
                s.ready,
                s.scheduled,
                s.active,
                s.outstanding,
                s.dead,
                s.completed,
                s.cancelled
            );
        }
    }
    if !failed.is_empty() {
        return Err(Failure {
            code: 1,
            message: format!(
                "could not read {}: {}",
                if failed.len() == 1 {
                    "this queue"
                } else {
                    "these queues"
                },
                failed.join(", ")
            ),
        });
    }
    Ok(())
}

async fn inspect(queue: &Queue, id: &str, json: bool) -> Result<(), Failure> {
    let info = queue.info(id).await?;
    if json {
        println!("{}", serde_json::to_string(&info).unwrap_or_default());
        return Ok(());
    }
    let show = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into())
    };
    println!("id           {}", info.id);
    println!("queue        {}", info.queue);
    println!("state        {}", info.state);
    println!("attempts     {} of {}", info.attempts, info.max_attempts);
    println!("priority     {}", info.priority);
    println!("progress     {}", show(&info.progress));
    println!("result       {}", show(&info.result));
    println!("last error   {}", info.last_error.as_deref().unwrap_or("-"));
    println!("payload      {}", info.payload);
    Ok(())
}

fn percent_of(info: &JobInfo) -> Option<f64> {
    info.progress.as_ref()?.get("percent")?.as_f64()
}

async fn watch(queue: &Queue, id: &str) -> Result<ExitCode, Failure> {
    let bar = indicatif::ProgressBar::new(100);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {pos:>3}% {msg} (eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut seen = false;
    let mut down_since: Option<std::time::Instant> = None;
    loop {
        let info = match queue.info(id).await {
            Ok(info) => {
                seen = true;
                down_since = None;
                info
            }
            // Completed or cancelled with retention 0: the hash is gone the
            // moment the job ends (dead jobs are always kept).
            Err(QueueError::NotFound { .. }) if seen => {
                bar.finish();
                println!(
                    "{id} finished and was not retained (retention 0): it completed or was cancelled; its result was not kept"
                );
                return Ok(ExitCode::SUCCESS);
            }
            // A dropped connection is not the job's failure: keep watching.
            Err(e) if e.is_transient() => {
                let since = *down_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > WATCH_OUTAGE {
                    return Err(e.into());
                }
                bar.set_message(format!("Redis unreachable, retrying: {e}"));
                tokio::time::sleep(WATCH_POLL).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(p) = percent_of(&info) {
            bar.set_position(p.clamp(0.0, 100.0) as u64);
        }
        let fps = info
            .progress
            .as_ref()
            .and_then(|p| p.get("fps"))
            .and_then(|f| f.as_f64())
            .map(|f| format!(" {f:.1} fps"))
            .unwrap_or_default();
        bar.set_message(format!("{} attempt {}{fps}", info.state, info.attempts));
        if info.state.is_terminal() {
            bar.finish();
            return Ok(match info.state {
                JobState::Completed => {
                    println!(
                        "{id} completed: {}",
                        info.result.map(|r| r.to_string()).unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                other => {
                    eprintln!(
                        "spoolctl: job {id} ended {other}: {}",
                        info.last_error.unwrap_or_default()
                    );
                    ExitCode::from(1)
                }
            });
        }
        tokio::time::sleep(WATCH_POLL).await;
    }
}

async fn check(queue: &Queue, repair: bool, json: bool) -> Result<ExitCode, Failure> {
    let report = queue.check(repair).await?;
    if json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        for f in &report.findings {
            println!("{f}");
        }
        let verb = if report.repaired { "repaired" } else { "found" };
        println!(
            "{}: {} jobs examined{}, {} {verb}",
            report.queue,
            report.examined,
            if report.keys_scanned {
                ""
            } else {
                " (indexes only: a cluster's job keys are not scanned)"
            },
            report.findings.len()
        );
    }
    Ok(if report.findings.is_empty() || report.repaired {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn dead(queue: &Queue, action: DeadAction) -> Result<(), Failure> {
    match action {
        DeadAction::List { limit, json } => {
            for job in queue.dead_list(0, limit).await? {
                if json {
                    println!("{}", serde_json::to_string(&job).unwrap_or_default());
                } else {
                    println!(
                        "{}  attempts {}  {}",
                        job.id,
                        job.attempts,
                        job.last_error.unwrap_or_default()
                    );
                }
            }
        }
        DeadAction::Retry { ids, limit } => {
            println!("retried {}", queue.dead_retry(&ids, limit).await?)
        }
        DeadAction::Purge { ids, limit } => {
            println!("purged {}", queue.dead_purge(&ids, limit).await?)
        }
    }
    Ok(())
}
