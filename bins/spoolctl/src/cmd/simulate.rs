//! `spoolctl simulate`: a load profile replayed against a ScaledObject's
//! settings through the KEDA/HPA model.

use crate::*;

#[derive(clap::Args)]
pub(crate) struct SimulateArgs {
    /// A manifest holding the ScaledObject (and the Deployment, for its grace
    /// period): a component file or `kubectl kustomize` output.
    #[arg(long)]
    pub(crate) manifest: std::path::PathBuf,
    /// A built-in load: burst, long, ramp or diurnal.
    #[arg(long, default_value = "burst", conflicts_with = "load")]
    pub(crate) profile: String,
    /// A CSV load instead: `arrival_s,duration_s` per line.
    #[arg(long)]
    pub(crate) load: Option<std::path::PathBuf>,
    /// Override the metric the trigger reads: outstanding or backlog.
    #[arg(long)]
    pub(crate) metric: Option<String>,
    /// Seconds from scheduling a pod to its readiness.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) pod_start: f64,
    /// Drain timeout; default: the grace period minus 5 s.
    #[arg(long)]
    pub(crate) drain_timeout: Option<f64>,
    /// Jobs per pod; default: the trigger's listLength.
    #[arg(long)]
    pub(crate) slots: Option<u32>,
    /// Write an SVG plot of backlog, outstanding work and replicas.
    #[arg(long)]
    pub(crate) plot: Option<std::path::PathBuf>,
    /// ScaledJob: seconds from a pod running to its first reserve.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) reserve_delay: f64,
    /// ScaledJob: the workers' SPOOL_IDLE_EXIT, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub(crate) idle_exit: f64,
    /// ScaledJob: override the scaling strategy (default, accurate, eager).
    #[arg(long)]
    pub(crate) strategy: Option<String>,
    /// Model every job as delayed (or a retry) that comes due at its arrival
    /// time: it waits in `scheduled`, which no KEDA key counts, until promoted.
    #[arg(long)]
    pub(crate) delayed: bool,
    /// With --delayed: the promoter's interval, seconds (`spoolctl promote
    /// --every`); 0 models a cluster without the promoter, where only a
    /// running worker promotes (a fleet at zero strands due work).
    #[arg(long, default_value_t = 1.0, requires = "delayed")]
    pub(crate) promoter_every: f64,
    /// Model every job longer than this many seconds of run time as a
    /// chunked encode: a plan, chunks of this length on any free slots, then
    /// a join (docs/encode-jobs.md, "Chunked encodes").
    #[arg(long, value_name = "SECONDS")]
    pub(crate) chunked: Option<f64>,
    /// With --chunked: the plan's run time as a fraction of the job's.
    #[arg(long, default_value_t = 0.005, requires = "chunked")]
    pub(crate) plan_fraction: f64,
    /// With --chunked: the audio part's run time as a fraction of the
    /// job's (0: no audio part).
    #[arg(long, default_value_t = 0.05, requires = "chunked")]
    pub(crate) audio_fraction: f64,
    /// With --chunked: the join's run time as a fraction of the job's.
    #[arg(long, default_value_t = 0.005, requires = "chunked")]
    pub(crate) join_fraction: f64,
}

/// The load the flags name.
fn load(a: &SimulateArgs) -> Result<(Vec<spool_autoscale::sim::Arrival>, f64), Failure> {
    use spool_autoscale::sim;
    match &a.load {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| usage(format!("cannot read --load {}: {e}", path.display())))?;
            sim::parse_load_csv(&text).map_err(|line| {
                usage(format!(
                    "--load line {line}: expected arrival_s,duration_s (non-negative numbers)"
                ))
            })
        }
        None => sim::profile(&a.profile).ok_or_else(|| {
            usage(format!(
                "unknown --profile {:?}: use burst, long, ramp or diurnal",
                a.profile
            ))
        }),
    }
}

/// A ScaledJob: Jobs of one job each, run to completion.
fn simulate_jobs(
    a: &SimulateArgs,
    mut spec: spool_autoscale::jobs::ScaledJobSpec,
    mut metric: spool_autoscale::sim::Metric,
) -> Result<(), Failure> {
    use spool_autoscale::jobs::{JobFleet, JobStrategy, simulate_jobs};
    if let Some(m) = &a.metric {
        metric = parse_metric(m)?;
    }
    if let Some(st) = &a.strategy {
        spec.strategy = JobStrategy::parse(st).ok_or_else(|| {
            usage(format!(
                "invalid --strategy {st:?}: use default, accurate or eager"
            ))
        })?;
    }
    let (load, horizon) = load(a)?;
    let fleet = JobFleet {
        pod_start_s: a.pod_start,
        reserve_s: a.reserve_delay,
        idle_exit_s: a.idle_exit,
    };
    let r = simulate_jobs(&spec, &fleet, metric, &load, horizon);
    let peak_backlog = r.samples.iter().map(|s| s.backlog).max().unwrap_or(0);
    let peak_jobs = r.samples.iter().map(|s| s.jobs).max().unwrap_or(0);
    println!(
        "ScaledJob: strategy {:?}, metric {:?}, pod start {} s, first reserve {} s later, idle exit {} s",
        spec.strategy, metric, fleet.pod_start_s, fleet.reserve_s, fleet.idle_exit_s
    );
    println!(
        "jobs {} completed {}; Jobs created {}, found no work {}",
        load.len(),
        r.completed,
        r.created,
        r.found_nothing
    );
    println!("peak backlog {peak_backlog}, peak Jobs {peak_jobs}");
    print_waits(&r.waits_s, r.replica_minutes);
    if let Some(path) = &a.plot {
        // Jobs alive are the ScaledJob's "replicas"; outstanding counts the
        // waiting jobs and one per Job (working, starting or idle).
        let samples: Vec<spool_autoscale::sim::Sample> = r
            .samples
            .iter()
            .map(|s| spool_autoscale::sim::Sample {
                t_s: s.t_s,
                backlog: s.backlog,
                outstanding: s.backlog + u64::from(s.jobs),
                replicas: s.jobs,
            })
            .collect();
        let title = format!(
            "ScaledJob — {:?} metric, {:?} strategy, {} Jobs for nothing",
            metric, spec.strategy, r.found_nothing
        );
        spool_autoscale::plot::plot_svg(path, &title, &samples).map_err(|e| Failure {
            code: 1,
            message: e,
        })?;
        println!("plot: {}", path.display());
    }
    Ok(())
}

fn print_waits(waits_s: &[f64], replica_minutes: f64) {
    let q = |p| spool_autoscale::sim::quantile(waits_s, p);
    println!(
        "wait p50 {:.0} s, p95 {:.0} s, p99 {:.0} s; replica-minutes {replica_minutes:.0}",
        q(0.5),
        q(0.95),
        q(0.99),
    );
}

fn parse_metric(m: &str) -> Result<spool_autoscale::sim::Metric, Failure> {
    use spool_autoscale::sim::Metric;
    match m {
        "outstanding" => Ok(Metric::Outstanding),
        "backlog" => Ok(Metric::Backlog),
        other => Err(usage(format!(
            "invalid --metric {other:?}: use outstanding or backlog"
        ))),
    }
}

pub(crate) fn simulate(a: &SimulateArgs) -> Result<(), Failure> {
    use spool_autoscale::sim::{self, FleetSpec};
    let text = std::fs::read_to_string(&a.manifest).map_err(|e| {
        usage(format!(
            "cannot read --manifest {}: {e}",
            a.manifest.display()
        ))
    })?;
    if let Some((spec, metric)) = spool_autoscale::manifest::parse_scaled_job(&text)
        .map_err(|e| usage(format!("{}: {e}", a.manifest.display())))?
    {
        return simulate_jobs(a, spec, metric);
    }
    let scaling = spool_autoscale::manifest::parse(&text)
        .map_err(|e| usage(format!("{}: {e}", a.manifest.display())))?;
    let metric = match a.metric.as_deref() {
        None => scaling.metric,
        Some(m) => parse_metric(m)?,
    };
    let (load, horizon) = load(a)?;
    let chunking = match a.chunked {
        None => None,
        Some(c) => {
            let fraction = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
            if !(c.is_finite() && c >= 1.0) {
                return Err(usage(format!("invalid --chunked {c}: at least 1 second")));
            }
            if ![a.plan_fraction, a.audio_fraction, a.join_fraction]
                .into_iter()
                .all(fraction)
            {
                return Err(usage(
                    "--plan-fraction, --audio-fraction and --join-fraction are within 0..=1",
                ));
            }
            Some(sim::ChunkModel {
                chunk_s: c,
                plan_fraction: a.plan_fraction,
                audio_fraction: a.audio_fraction,
                join_fraction: a.join_fraction,
            })
        }
    };
    let fleet = FleetSpec {
        chunking,
        slots: a.slots.unwrap_or(scaling.spec.target.max(1.0) as u32),
        pod_start_s: a.pod_start,
        drain_s: a.drain_timeout.unwrap_or((scaling.grace_s - 5.0).max(0.0)),
        initial: scaling.spec.min,
        due: if !a.delayed {
            sim::DueWork::Ready
        } else if a.promoter_every > 0.0 && a.promoter_every.is_finite() {
            sim::DueWork::Promoter(a.promoter_every)
        } else {
            sim::DueWork::WorkersOnly
        },
    };
    let r = sim::simulate(scaling.spec.clone(), &fleet, metric, &load, horizon);
    let peak_backlog = r.samples.iter().map(|s| s.backlog).max().unwrap_or(0);
    let peak_replicas = r.samples.iter().map(|s| s.replicas).max().unwrap_or(0);
    println!(
        "metric {:?}, {} jobs per pod, pod start {} s, drain {} s",
        metric, fleet.slots, fleet.pod_start_s, fleet.drain_s
    );
    println!(
        "jobs {} completed {} released {}{}",
        load.len(),
        r.completed,
        r.released,
        if a.delayed {
            format!(
                ", stranded in scheduled {} ({})",
                r.stranded,
                if a.promoter_every > 0.0 {
                    format!("promoter every {} s", a.promoter_every)
                } else {
                    "no promoter: only running workers promote".to_owned()
                }
            )
        } else {
            String::new()
        }
    );
    println!(
        "peak backlog {peak_backlog}, peak replicas {peak_replicas}, direction changes {}",
        r.direction_changes
    );
    print_waits(&r.waits_s, r.replica_minutes);
    let q = |p| sim::quantile(&r.latencies_s, p);
    println!(
        "latency (arrival to outputs) p50 {:.0} s, p95 {:.0} s, max {:.0} s{}",
        q(0.5),
        q(0.95),
        q(1.0),
        match fleet.chunking {
            Some(c) => format!(
                "; chunked: {} s chunks, plan {}, audio {} and join {} of a job's run time",
                c.chunk_s, c.plan_fraction, c.audio_fraction, c.join_fraction
            ),
            None => String::new(),
        }
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
