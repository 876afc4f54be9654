//! Scaling across real processes: `sleep_worker` pods driven by the KEDA/HPA
//! model reading the real queue, with time scaled down (polling 1 s, windows
//! of seconds). Each test writes its timeline under `target/spool-tests/`.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use spool_autoscale::{Autoscaler, Policy, Rules, ScalerSpec, Select};
use spool_queue::{Client, JobOptions, NewJob, Queue};
use spool_testkit::{RedisServer, example_binary};
use spool_tests::{Fleet, Record, Timeline, direction_changes};

/// How often the model polls the queue (KEDA's pollingInterval, scaled down).
const POLL: Duration = Duration::from_secs(1);
/// The harness's tick: load injection and pod reaping.
const TICK: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Metric {
    Outstanding,
    Backlog,
}

fn spec(max: u32, per_pod: f64, down_window_s: f64) -> ScalerSpec {
    ScalerSpec {
        min: 1,
        max,
        polling_s: 1.0,
        cooldown_s: 5.0,
        target: per_pod,
        activation: 0.0,
        up: Rules {
            stabilization_s: 0.0,
            policies: vec![
                Policy::Percent {
                    value: 100,
                    period_s: 1.0,
                },
                Policy::Pods {
                    value: 4,
                    period_s: 1.0,
                },
            ],
            select: Select::Max,
        },
        down: Rules {
            stabilization_s: down_window_s,
            policies: vec![Policy::Percent {
                value: 100,
                period_s: 1.0,
            }],
            select: Select::Max,
        },
    }
}

struct Run {
    timeline: Timeline,
    record: Record,
    ids: Vec<spool_queue::JobId>,
}

/// Runs a fleet against a load until `done` says so (or `limit` passes).
#[allow(clippy::too_many_arguments)]
async fn drive(
    name: &str,
    metric: Metric,
    spec: ScalerSpec,
    per_pod: &str,
    drain: &str,
    mut load: impl FnMut(f64) -> Vec<NewJob>,
    done: impl Fn(f64, &spool_queue::QueueStats, usize) -> bool,
    limit: Duration,
) -> Result<Run> {
    let server = RedisServer::start()?;
    let q: Queue = Client::connect(&server.url()).await?.queue("scale")?;
    let dir = tempfile_dir()?;
    let rec = dir.join("record");
    let rec_s = rec.display().to_string();
    let bin = example_binary("spool-worker", "sleep_worker")?;
    let env = [
        ("SPOOL_QUEUE", "scale"),
        ("SPOOL_CONCURRENCY", per_pod),
        ("SPOOL_DRAIN_TIMEOUT", drain),
        ("SPOOL_SWEEP_INTERVAL", "500ms"),
        ("SPOOL_SLEEP_RECORD", rec_s.as_str()),
    ];
    let mut fleet = Fleet::new(&bin, &server.url(), &env, Duration::from_secs(3));
    let mut scaler = Autoscaler::new(spec, 1);
    fleet.scale_to(1)?;
    let mut timeline = Timeline::new(&[
        "t_s",
        "backlog",
        "outstanding",
        "active",
        "replicas",
        "completed",
        "terminated",
    ]);
    let mut ids = Vec::new();
    let start = Instant::now();
    let mut next_poll = start;
    loop {
        let t = start.elapsed().as_secs_f64();
        let jobs = load(t);
        if !jobs.is_empty() {
            ids.extend(q.enqueue_batch(jobs).await?);
        }
        if Instant::now() >= next_poll {
            next_poll += POLL;
            let s = q.stats().await?;
            let m = match metric {
                Metric::Outstanding => s.outstanding,
                Metric::Backlog => s.ready,
            } as f64;
            let replicas = scaler.step(t, m) as usize;
            fleet.scale_to(replicas)?;
            timeline.push(vec![
                t,
                s.ready as f64,
                s.outstanding as f64,
                s.active as f64,
                fleet.replicas() as f64,
                s.completed as f64,
                fleet.terminated as f64,
            ]);
            if done(t, &s, fleet.replicas()) || start.elapsed() > limit {
                break;
            }
        }
        fleet.reap()?;
        tokio::time::sleep(TICK).await;
    }
    fleet.scale_to(0)?;
    fleet.wait_all_gone(Duration::from_secs(10))?;
    let path = timeline.write(name)?;
    eprintln!("{name}: timeline in {}", path.display());
    let col = |c: &str| timeline.column(c);
    let (t, backlog, outstanding, replicas) = (
        col("t_s"),
        col("backlog"),
        col("outstanding"),
        col("replicas"),
    );
    let samples: Vec<spool_autoscale::sim::Sample> = (0..t.len())
        .map(|i| spool_autoscale::sim::Sample {
            t_s: t[i],
            backlog: backlog[i] as u64,
            outstanding: outstanding[i] as u64,
            replicas: replicas[i] as u32,
        })
        .collect();
    let svg = path.with_extension("svg");
    spool_autoscale::plot::plot_svg(&svg, name, &samples).map_err(anyhow::Error::msg)?;
    Ok(Run {
        timeline,
        record: Record::read_required(&rec)?,
        ids,
    })
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = spool_testkit::artefact_dir().join(format!("run-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn job(ms: u64) -> NewJob {
    let payload = format!(r#"{{"sleep_ms": {ms}}}"#);
    NewJob::with_options(
        payload,
        JobOptions::default().lease(Duration::from_secs(10)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_scales_up_then_back_down_and_loses_nothing() -> Result<()> {
    let mut burst_sent = false;
    let mut trickle_next = 15.0;
    let load = move |t: f64| {
        let mut jobs = Vec::new();
        if !burst_sent {
            burst_sent = true;
            jobs.extend((0..400).map(|_| job(rand::random_range(200..=800))));
        }
        while (15.0..20.0).contains(&t) && t >= trickle_next {
            trickle_next += 0.2;
            jobs.push(job(300));
        }
        jobs
    };
    let run = drive(
        "scale_up_down",
        Metric::Outstanding,
        spec(8, 2.0, 3.0),
        "2",
        "1s",
        load,
        |t, s, replicas| t > 21.0 && s.outstanding == 0 && replicas == 1,
        Duration::from_secs(110),
    )
    .await?;

    let replicas = run.timeline.column("replicas");
    let peak = replicas.iter().copied().fold(0.0, f64::max);
    eprintln!("replicas over time: {replicas:?}");
    ensure!(
        peak >= 8.0,
        "the fleet must reach its maximum of 8, peaked at {peak}"
    );
    ensure!(
        replicas.last() == Some(&1.0),
        "the fleet must return to its minimum"
    );

    ensure!(run.ids.len() == 425, "{} jobs enqueued", run.ids.len());
    let done = run.record.done_counts();
    let missing = run
        .ids
        .iter()
        .filter(|id| !done.contains_key(id.as_str()))
        .count();
    let twice: Vec<_> = done.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(missing == 0, "{missing} jobs never completed");
    ensure!(twice.is_empty(), "jobs completed more than once: {twice:?}");

    // Every job released by a drain restarts within a second.
    for (id, delay) in run.record.restart_delays() {
        let delay = delay.ok_or_else(|| anyhow::anyhow!("released job {id} never restarted"))?;
        ensure!(
            delay < Duration::from_secs(1),
            "released job {id} restarted after {delay:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outstanding_work_does_not_thrash_where_the_backlog_does() -> Result<()> {
    // Jobs (6 s) longer than the scale-down window (2 s) plus the drain (1 s).
    let mut results = Vec::new();
    for metric in [Metric::Outstanding, Metric::Backlog] {
        let mut sent = false;
        let load = move |_t: f64| {
            if sent {
                return Vec::new();
            }
            sent = true;
            (0..16).map(|_| job(6000)).collect()
        };
        let name = match metric {
            Metric::Outstanding => "thrash_outstanding",
            Metric::Backlog => "thrash_backlog",
        };
        let run = drive(
            name,
            metric,
            spec(8, 2.0, 2.0),
            "2",
            "1s",
            load,
            |t, _, _| t > 25.0,
            Duration::from_secs(40),
        )
        .await?;
        let changes = direction_changes(&run.timeline.column("replicas"));
        let released = run.record.0.iter().filter(|e| e.kind == "stop").count();
        let completed = run.record.done_counts().len();
        eprintln!(
            "{metric:?}: {changes} direction changes, {released} jobs released, {completed} of 16 completed"
        );
        results.push((metric, changes, released, completed));
    }
    let (_, out_changes, out_released, out_completed) = results[0];
    let (_, back_changes, back_released, back_completed) = results[1];
    ensure!(
        out_changes <= 1 && out_released == 0 && out_completed == 16,
        "outstanding work thrashed: {results:?}"
    );
    ensure!(
        back_changes >= 2 && back_released > 0,
        "the backlog metric was expected to thrash: {results:?}"
    );
    ensure!(back_completed < out_completed, "{results:?}");
    Ok(())
}
