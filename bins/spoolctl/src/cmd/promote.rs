//! `spoolctl promote`: moves due delayed and retried jobs into the backlog,
//! so the keys the autoscaler reads see them even when no worker runs.
//!
//! Only a worker's reserve or sweep used to promote due work, so a fleet
//! scaled to zero never saw a delayed job or a retry come due: both KEDA keys
//! read 0 and the job waited for other work to arrive. One pass here runs the
//! same sweep script a worker runs (promote due jobs, hand back expired
//! leases, prune retention) on every queue, or on `--queue`; `--every` keeps
//! passing until SIGTERM or SIGINT, which is what the `promoter` Deployment in
//! `deploy/` runs. Passes are atomic scripts, so any number of promoters (and
//! workers) may run at once; at idle a pass costs one `SMEMBERS` and one
//! script call per queue.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::*;

/// Scheduled jobs one script call moves at most; a pass repeats the call
/// while a queue has more due (bounded by [`MAX_CALLS_PER_PASS`]).
const PASS_LIMIT: usize = 1000;
/// Calls per queue and pass: 100,000 due jobs, then the next pass goes on.
const MAX_CALLS_PER_PASS: usize = 100;
/// The health endpoint calls the promoter dead when no pass has succeeded
/// in this many intervals (Redis down that long, or the loop stuck).
const STALE_INTERVALS: u32 = 10;

#[derive(clap::Args)]
pub(crate) struct PromoteArgs {
    /// Keep going: a pass every DURATION (e.g. `1s`) until SIGTERM or SIGINT.
    /// Due work then reaches the autoscaler's keys within DURATION.
    #[arg(long)]
    every: Option<String>,
    /// With --every: serve `/healthz`, `/readyz` and `/metrics`
    /// (`spool_queue_lateness_seconds`, `spool_promoted_total`) here.
    #[arg(long, env = "SPOOL_PROMOTER_ADDR")]
    health_addr: Option<SocketAddr>,
    /// One JSON object per queue and pass.
    #[arg(long)]
    json: bool,
}

/// What the health endpoint reports, updated after each pass.
struct State {
    /// When the promoter started: the first pass gets as long as any other
    /// to succeed before `/healthz` fails.
    started: Instant,
    /// When the last pass over every queue succeeded.
    last_ok: Option<Instant>,
    /// Per queue: lateness after the pass (ms) and jobs promoted so far.
    queues: BTreeMap<String, (u64, u64)>,
}

impl Default for State {
    fn default() -> Self {
        State {
            started: Instant::now(),
            last_ok: None,
            queues: BTreeMap::new(),
        }
    }
}

impl State {
    /// Whether a pass succeeded within `stale`.
    fn fresh(&self, stale: Duration) -> bool {
        self.last_ok.is_some_and(|t| t.elapsed() <= stale)
    }
}

pub(crate) async fn promote(
    client: &Client,
    only: Option<&str>,
    args: PromoteArgs,
) -> Result<ExitCode, Failure> {
    let every = match &args.every {
        None => None,
        Some(v) => Some(
            spool_queue::parse_duration(v)
                .filter(|d| *d >= Duration::from_millis(100) && *d <= Duration::from_secs(3600))
                .ok_or_else(|| {
                    usage(format!(
                        "--every {v:?}: expected a duration from 100ms to 1h, e.g. 1s"
                    ))
                })?,
        ),
    };
    let Some(every) = every else {
        let state = Mutex::new(State::default());
        pass(client, only, args.json, &state).await?;
        return Ok(ExitCode::SUCCESS);
    };
    let state = Arc::new(Mutex::new(State::default()));
    if let Some(addr) = args.health_addr {
        serve(addr, state.clone(), every).await?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| usage(format!("cannot listen for SIGTERM: {e}")))?;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    eprintln!(
        "spoolctl promote: a pass every {every:?} over {}; SIGTERM or SIGINT stops",
        only.map_or("every known queue".to_owned(), |q| format!("queue {q}"))
    );
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
        // A failed pass (Redis away, a failover) is reported and retried at
        // the next tick; only the health endpoint turns it into a restart.
        if let Err(f) = pass(client, only, args.json, &state).await {
            eprintln!("spoolctl promote: pass failed: {}", safe(&f.message));
        }
    }
    eprintln!("spoolctl promote: stopped");
    Ok(ExitCode::SUCCESS)
}

/// One pass over the queues; prints a line per queue that had due work (all
/// of them with `--json`, or when run once).
async fn pass(
    client: &Client,
    only: Option<&str>,
    json: bool,
    state: &Mutex<State>,
) -> Result<(), Failure> {
    let names = match only {
        Some(q) => vec![q.to_owned()],
        None => client.queues().await?,
    };
    let once = state.lock().map(|s| s.last_ok.is_none()).unwrap_or(true);
    let mut failed = Vec::new();
    for name in names {
        let queue = match client.queue(&name) {
            Ok(q) => q,
            Err(e) => {
                failed.push(format!("{name}: {e}"));
                continue;
            }
        };
        let mut total = spool_queue::SweepReport::default();
        let mut report = spool_queue::SweepReport::default();
        for _ in 0..MAX_CALLS_PER_PASS {
            report = match queue.sweep(PASS_LIMIT).await {
                Ok(r) => r,
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => {
                    failed.push(format!("{name}: {e}"));
                    break;
                }
            };
            total.promoted += report.promoted;
            total.recovered += report.recovered;
            total.pruned += report.pruned;
            if report.lateness_ms == 0 {
                break;
            }
        }
        total.lateness_ms = report.lateness_ms;
        total.next_due_in_ms = report.next_due_in_ms;
        if let Ok(mut s) = state.lock() {
            let e = s.queues.entry(name.clone()).or_default();
            e.0 = total.lateness_ms;
            e.1 += total.promoted;
        }
        if json {
            let mut v = serde_json::to_value(total).unwrap_or_default();
            v["queue"] = serde_json::Value::from(name);
            println!("{v}");
        } else if once || total.promoted > 0 || total.recovered > 0 {
            println!(
                "{}: promoted {}, leases recovered {}, still late {} ms, next due {}",
                safe(&name),
                total.promoted,
                total.recovered,
                total.lateness_ms,
                total
                    .next_due_in_ms
                    .map_or("none scheduled".to_owned(), |ms| format!("in {ms} ms"))
            );
        }
    }
    if !failed.is_empty() {
        return Err(Failure {
            code: 1,
            message: format!("could not promote {}", failed.join("; ")),
        });
    }
    if let Ok(mut s) = state.lock() {
        s.last_ok = Some(Instant::now());
    }
    Ok(())
}

/// Serves the promoter's probes and metrics on `addr` from a task of its own.
async fn serve(addr: SocketAddr, state: Arc<Mutex<State>>, every: Duration) -> Result<(), Failure> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| usage(format!("cannot listen on {addr} (--health-addr): {e}")))?;
    let stale = every * STALE_INTERVALS;
    // Alive until passes have failed for STALE_INTERVALS (a restart then
    // may help: a wedged connection); the first pass gets the same time.
    // Ready only while passes succeed.
    let probe = |state: Arc<Mutex<State>>, liveness: bool, ok_text: &'static str| {
        move || {
            let ok = state
                .lock()
                .is_ok_and(|s| s.fresh(stale) || (liveness && s.started.elapsed() <= stale));
            async move {
                if ok {
                    (StatusCode::OK, ok_text)
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no successful pass lately\n",
                    )
                }
            }
        }
    };
    let app = axum::Router::new()
        .route("/healthz", get(probe(state.clone(), true, "ok\n")))
        .route("/readyz", get(probe(state.clone(), false, "ready\n")))
        .route(
            "/metrics",
            get(move || {
                let body = render_metrics(&state);
                async move { body }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("spoolctl promote: health server stopped: {e}");
        }
    });
    Ok(())
}

/// The Prometheus text of the promoter's metrics.
fn render_metrics(state: &Mutex<State>) -> String {
    let Ok(s) = state.lock() else {
        return String::new();
    };
    let mut out = String::from(
        "# HELP spool_queue_lateness_seconds How late the oldest due job waiting in scheduled is, after the last pass.\n# TYPE spool_queue_lateness_seconds gauge\n",
    );
    for (q, (late, _)) in &s.queues {
        out += &format!(
            "spool_queue_lateness_seconds{{queue=\"{q}\"}} {}\n",
            *late as f64 / 1000.0
        );
    }
    out += "# HELP spool_promoted_total Due jobs this promoter moved into the backlog.\n# TYPE spool_promoted_total counter\n";
    for (q, (_, promoted)) in &s.queues {
        out += &format!("spool_promoted_total{{queue=\"{q}\"}} {promoted}\n");
    }
    out += &format!(
        "# HELP spool_promoter_last_pass_age_seconds Seconds since the last successful pass.\n# TYPE spool_promoter_last_pass_age_seconds gauge\nspool_promoter_last_pass_age_seconds {}\n",
        s.last_ok
            .map_or(f64::INFINITY, |t| t.elapsed().as_secs_f64())
    );
    out
}
