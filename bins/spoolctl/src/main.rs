//! `spoolctl`: the operator and script CLI for spool queues.
//!
//! Output shapes are an interface (the README and docs/operations.md): `enqueue` prints one id a
//! line in input order, `inspect --json` and `stats --json` print one JSON
//! object (a line per queue for `stats`). Exit codes: 0 success, 1 runtime
//! failure (Redis unreachable, a watched job failed), 2 bad usage or input.

mod cmd;

use cmd::*;

use std::io::{BufRead, IsTerminal, Read};
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
    /// Writes (enqueue, cancel, dead-letter retries, pause, promote…) are
    /// acknowledged only once this many replicas have them (Redis `WAIT`),
    /// as the workers do: set it to what the workers use (docs/operations.md).
    #[arg(long, env = "SPOOL_REDIS_MIN_REPLICAS", default_value_t = 0, global = true,
          value_parser = clap::value_parser!(u32).range(0..=spool_queue::MAX_MIN_REPLICAS as i64))]
    redis_min_replicas: u32,
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
    /// The live workers (registry): what each runs, draining or not; every
    /// known queue, or only --queue when given.
    Workers {
        /// One JSON object per worker, a line each.
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
        /// The job's log too (its handler's lines and FFmpeg's warnings);
        /// with --json, as a `log` array of `{at_ms, level, message}`.
        #[arg(long)]
        log: bool,
    },
    /// Follow a job's progress until it ends; exits 1 unless it completed.
    Watch {
        /// The job id.
        id: String,
    },
    /// Pause the queue: nothing new starts, running jobs finish, enqueues are
    /// accepted, and both KEDA keys read 0 once the running jobs end (the
    /// fleet scales to zero).
    Pause {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Resume a paused queue: its backlog comes back in its order.
    Resume {
        /// One JSON object.
        #[arg(long)]
        json: bool,
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
    /// Move due delayed and retried jobs into the backlog (and hand back
    /// expired leases) on every known queue, or --queue: what keeps a fleet
    /// at zero from stranding due work. `--every 1s` repeats until SIGTERM.
    Promote(PromoteArgs),
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
            eprintln!("spoolctl: {}", safe(&f.message));
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
    let mut options =
        spool_queue::ClientOptions::default().with_min_replicas(cli.redis_min_replicas);
    if let Some(ca) = &cli.redis_ca_file {
        options = options.with_tls_ca_file(ca).map_err(|why| {
            usage(format!(
                "invalid --redis-ca-file (SPOOL_REDIS_CA_FILE) {}: {why}",
                ca.display()
            ))
        })?;
    }
    let client = Client::connect_with(&cli.redis_url, options).await?;
    let memory = client.server_memory().await.ok();
    if let Some(m) = memory.as_ref().filter(|m| m.evicts()) {
        eprintln!(
            "spoolctl: error: Redis at {} has maxmemory-policy {}: under memory pressure it deletes keys, and a deleted job is lost; set `maxmemory-policy noeviction` (docs/operations.md)",
            client.addr(),
            m.policy
        );
    }
    let queue = client.queue(cli.queue.as_deref().unwrap_or(DEFAULT_QUEUE))?;
    match cli.command {
        Command::Enqueue(args) => enqueue(&queue, args).await?,
        Command::Encode(args) => {
            let spec = encode_spec(&args)?;
            let opts = JobOptions::default().priority(args.priority);
            println!("{}", queue.enqueue(spec.to_string(), opts).await?);
        }
        Command::Stats { json } => {
            stats(&client, cli.queue.as_deref(), json).await?;
            if let (Some(m), false) = (&memory, json) {
                println!("{}", memory_line(m));
            }
        }
        Command::Inspect { id, json, log } => inspect(&queue, &id, json, log).await?,
        Command::Workers { json } => workers(&client, cli.queue.as_deref(), json).await?,
        Command::Watch { id } => return watch(&queue, &id).await,
        Command::Cancel { id } => match queue.cancel(&id).await? {
            CancelOutcome::Cancelled => println!("cancelled {id}"),
            CancelOutcome::Requested => {
                println!("cancel requested for {id}: its worker stops it at the next heartbeat")
            }
            CancelOutcome::AlreadyFinished(s) => println!("{id} had already ended: {s}"),
            other => println!("{id}: {other:?}"),
        },
        Command::Dead { action } => dead(&queue, action).await?,
        Command::Pause { json } => print_pause(&queue, queue.pause().await?, json),
        Command::Resume { json } => print_pause(&queue, queue.resume().await?, json),
        Command::Check {
            repair,
            dry_run,
            json,
        } => return check(&queue, repair && !dry_run, json).await,
        Command::Promote(args) => return promote(&client, cli.queue.as_deref(), args).await,
        Command::Keys { .. } | Command::Simulate(_) => {}
    }
    Ok(ExitCode::SUCCESS)
}
