//! A discrete-time simulation of a worker fleet under a load profile, scaled
//! by the [`Autoscaler`]: what `spoolctl simulate` runs so operators can tune
//! `listLength` and windows before touching a cluster.
//!
//! Each second: arrivals join the backlog; started pods take jobs into their
//! free slots (FIFO); running jobs progress; every polling interval the
//! autoscaler reads the metric (outstanding work or backlog) and the fleet
//! grows (pods become ready after `pod_start_s`) or shrinks (the newest pods
//! drain: they run their jobs up to `drain_s`, then release the rest to the
//! front of the backlog, as spool's workers do).

use std::collections::VecDeque;

use crate::{Autoscaler, ScalerSpec};

/// Which key the trigger measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Ready + active (`spool:{q}:outstanding`).
    Outstanding,
    /// Ready only (`spool:{q}:ready`).
    Backlog,
}

/// One job of a load profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// When it is enqueued, seconds.
    pub at_s: f64,
    /// How long it runs, seconds.
    pub duration_s: f64,
}

/// Parses a CSV load: one `arrival_s,duration_s` line per job; blank lines,
/// `#` comments and a header line starting with `arrival` are skipped. Returns
/// the arrivals and a horizon long enough to see the fleet scale back down,
/// or the 1-based number of the first line that is not a pair of numbers.
pub fn parse_load_csv(text: &str) -> Result<(Vec<Arrival>, f64), usize> {
    let mut load = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("arrival") {
            continue;
        }
        let parsed = line.split_once(',').and_then(|(t, d)| {
            let at_s: f64 = t.trim().parse().ok()?;
            let duration_s: f64 = d.trim().parse().ok()?;
            (at_s.is_finite() && duration_s.is_finite() && at_s >= 0.0 && duration_s >= 0.0)
                .then_some(Arrival { at_s, duration_s })
        });
        load.push(parsed.ok_or(i + 1)?);
    }
    let end = load
        .iter()
        .map(|a| a.at_s + a.duration_s)
        .fold(0.0, f64::max);
    // Half again the load's span, plus ten minutes for the scale-down.
    Ok((load, end * 1.5 + 600.0))
}

/// The fleet's settings beyond the ScaledObject.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Jobs per pod (the worker's concurrency).
    pub slots: u32,
    /// From scheduling to ready.
    pub pod_start_s: f64,
    /// Drain timeout (below the grace period).
    pub drain_s: f64,
    /// Pods at the start.
    pub initial: u32,
    /// How arrivals become visible to the trigger ([`DueWork`]).
    pub due: DueWork,
    /// Every job longer than a chunk runs as a chunked encode
    /// ([`ChunkModel`]); `None`: every job runs whole.
    pub chunking: Option<ChunkModel>,
}

/// A chunked encode (docs/encode-jobs.md, "Chunked encodes") as the
/// simulation runs it: the job is a plan, which enqueues its chunks; the
/// chunks run on any free slots; when the last ends, a join runs (at the
/// front of the backlog, as a flow's parent does). A job no longer than
/// one chunk runs whole.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkModel {
    /// A chunk's run time, seconds: a job of `d` seconds becomes
    /// `ceil(d / chunk_s)` chunks of equal length.
    pub chunk_s: f64,
    /// The plan's run time as a fraction of the job's.
    pub plan_fraction: f64,
    /// The audio part's run time as a fraction of the job's (it runs
    /// beside the chunks, first; the chunks share the rest).
    pub audio_fraction: f64,
    /// The join's run time as a fraction of the job's.
    pub join_fraction: f64,
}

/// What a simulated job is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    /// A job of the load, run whole.
    Whole,
    /// The plan of chunked encode `g`.
    Plan(usize),
    /// A chunk of chunked encode `g`.
    Chunk(usize),
    /// The join of chunked encode `g`.
    Join(usize),
}

/// A chunked encode in flight: its load job's arrival and duration, its
/// chunks, and how many of its parts (chunks and audio) have not ended.
struct Group {
    arrival: f64,
    duration: f64,
    chunks: u32,
    left: u32,
}

/// How the load's jobs reach the keys the trigger reads. A job enqueued
/// ready is counted at once; a delayed job or a retry waits in `scheduled`,
/// which no KEDA key counts, until something promotes it once it is due.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum DueWork {
    /// Every arrival is enqueued ready (the load's jobs have no delay).
    #[default]
    Ready,
    /// Every arrival is a delayed job or retry due at its arrival time, and a
    /// promoter (`spoolctl promote --every`) passes this often, in seconds:
    /// it is counted at the first pass after it is due.
    Promoter(f64),
    /// Every arrival is due at its arrival time and nothing but a live
    /// worker promotes it: with no pod running it stays invisible, and a
    /// fleet at zero never starts for it (what the promoter prevents).
    WorkersOnly,
}

/// One sample per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Time, seconds.
    pub t_s: f64,
    /// Ready jobs.
    pub backlog: u64,
    /// Ready + running jobs.
    pub outstanding: u64,
    /// Pods not draining.
    pub replicas: u32,
}

/// What a simulation measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The timeline.
    pub samples: Vec<Sample>,
    /// Wait from arrival to start, seconds, for every started job (restarts included).
    pub waits_s: Vec<f64>,
    /// Pod-minutes paid for (starting, running and draining pods).
    pub replica_minutes: f64,
    /// Times the replica count changed direction.
    pub direction_changes: usize,
    /// Jobs handed back by draining pods.
    pub released: u64,
    /// Jobs finished.
    pub completed: u64,
    /// Due jobs never promoted by the horizon: stranded in `scheduled`.
    pub stranded: u64,
    /// From each finished load job's arrival to its end (a chunked one's
    /// join), seconds.
    pub latencies_s: Vec<f64>,
}

impl Report {
    /// The `p`-quantile (0..=1) of the waits.
    pub fn wait_quantile(&self, p: f64) -> f64 {
        quantile(&self.waits_s, p)
    }
}

struct Pod {
    ready_at: f64,
    draining_since: Option<f64>,
    /// (arrival, remaining seconds, original duration, part) of each
    /// running job.
    jobs: Vec<(f64, f64, f64, Part)>,
}

/// Runs the simulation for `horizon_s` seconds.
pub fn simulate(
    spec: ScalerSpec,
    fleet: &FleetSpec,
    metric: Metric,
    load: &[Arrival],
    horizon_s: f64,
) -> Report {
    let mut load: Vec<Arrival> = load.to_vec();
    load.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let mut next_arrival = 0;
    let polling = spec.polling_s.max(1.0);
    let mut scaler = Autoscaler::new(spec, fleet.initial);
    let mut pods: Vec<Pod> = (0..fleet.initial)
        .map(|_| Pod {
            ready_at: 0.0,
            draining_since: None,
            jobs: Vec::new(),
        })
        .collect();
    // (arrival, duration, part) of each waiting job.
    let mut backlog: VecDeque<(f64, f64, Part)> = VecDeque::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut report = Report {
        samples: Vec::new(),
        waits_s: Vec::new(),
        replica_minutes: 0.0,
        direction_changes: 0,
        released: 0,
        completed: 0,
        stranded: 0,
        latencies_s: Vec::new(),
    };
    // Due jobs not promoted yet: (due time, duration, part).
    let mut scheduled: VecDeque<(f64, f64, Part)> = VecDeque::new();
    let mut next_poll = 0.0;
    let mut t = 0.0;
    while t <= horizon_s {
        while next_arrival < load.len() && load[next_arrival].at_s <= t {
            let (at, d) = (load[next_arrival].at_s, load[next_arrival].duration_s);
            let job = match fleet.chunking {
                Some(c) if c.chunk_s > 0.0 && d > c.chunk_s => {
                    let chunks = (d / c.chunk_s).ceil() as u32;
                    groups.push(Group {
                        arrival: at,
                        duration: d,
                        chunks,
                        left: chunks + u32::from(c.audio_fraction > 0.0),
                    });
                    (at, d * c.plan_fraction, Part::Plan(groups.len() - 1))
                }
                _ => (at, d, Part::Whole),
            };
            match fleet.due {
                DueWork::Ready => backlog.push_back(job),
                DueWork::Promoter(_) | DueWork::WorkersOnly => scheduled.push_back(job),
            }
            next_arrival += 1;
        }
        // Promotion: at the promoter's passes, or only while a worker runs
        // (its reserves and sweeps promote).
        let promotes = match fleet.due {
            DueWork::Ready => false,
            DueWork::Promoter(every) => {
                let every = every.max(1e-3);
                // A pass falls in this second of the timeline.
                (t / every).floor() != ((t - 1.0) / every).floor() || every <= 1.0
            }
            DueWork::WorkersOnly => pods
                .iter()
                .any(|p| p.draining_since.is_none() && p.ready_at <= t),
        };
        if promotes {
            backlog.extend(scheduled.drain(..));
        }
        // Work for one second.
        let mut ended: Vec<(f64, Part)> = Vec::new();
        for pod in &mut pods {
            for job in &mut pod.jobs {
                job.1 -= 1.0;
            }
            ended.extend(pod.jobs.iter().filter(|j| j.1 <= 0.0).map(|j| (j.0, j.3)));
            pod.jobs.retain(|j| j.1 > 0.0);
        }
        for (arrival, part) in ended {
            match (part, fleet.chunking) {
                (Part::Whole, _) => {
                    report.completed += 1;
                    report.latencies_s.push(t + 1.0 - arrival);
                }
                (Part::Plan(g), Some(c)) => {
                    let group = &groups[g];
                    if c.audio_fraction > 0.0 {
                        backlog.push_back((t, group.duration * c.audio_fraction, Part::Chunk(g)));
                    }
                    let k = group.chunks.max(1);
                    let each = group.duration * (1.0 - c.audio_fraction).max(0.0) / f64::from(k);
                    for _ in 0..k {
                        backlog.push_back((t, each, Part::Chunk(g)));
                    }
                }
                (Part::Chunk(g), Some(c)) => {
                    let group = &mut groups[g];
                    group.left = group.left.saturating_sub(1);
                    if group.left == 0 {
                        backlog.push_front((t, group.duration * c.join_fraction, Part::Join(g)));
                    }
                }
                (Part::Join(g), _) => {
                    report.completed += 1;
                    report.latencies_s.push(t + 1.0 - groups[g].arrival);
                }
                (Part::Plan(_) | Part::Chunk(_), None) => {}
            }
        }
        // Draining pods past their timeout release what is left, and go.
        for pod in &mut pods {
            if let Some(since) = pod.draining_since
                && t - since >= fleet.drain_s
            {
                for (arrival, _, duration, part) in pod.jobs.drain(..).rev() {
                    backlog.push_front((arrival, duration, part));
                    report.released += 1;
                }
            }
        }
        pods.retain(|p| p.draining_since.is_none() || !p.jobs.is_empty());
        // Ready pods fill their free slots.
        for pod in pods
            .iter_mut()
            .filter(|p| p.draining_since.is_none() && p.ready_at <= t)
        {
            while (pod.jobs.len() as u32) < fleet.slots {
                let Some((arrival, duration, part)) = backlog.pop_front() else {
                    break;
                };
                report.waits_s.push(t - arrival);
                pod.jobs.push((arrival, duration, duration, part));
            }
        }
        let running: u64 = pods.iter().map(|p| p.jobs.len() as u64).sum();
        let live = pods.iter().filter(|p| p.draining_since.is_none()).count() as u32;
        if t >= next_poll {
            next_poll += polling;
            let m = match metric {
                Metric::Outstanding => backlog.len() as u64 + running,
                Metric::Backlog => backlog.len() as u64,
            } as f64;
            let desired = scaler.step(t, m);
            if desired > live {
                for _ in live..desired {
                    pods.push(Pod {
                        ready_at: t + fleet.pod_start_s,
                        draining_since: None,
                        jobs: Vec::new(),
                    });
                }
            } else if desired < live {
                let mut extra = live - desired;
                for pod in pods.iter_mut().rev().filter(|p| p.draining_since.is_none()) {
                    if extra == 0 {
                        break;
                    }
                    pod.draining_since = Some(t);
                    extra -= 1;
                }
                pods.retain(|p| p.draining_since.is_none() || !p.jobs.is_empty());
            }
        }
        report.replica_minutes += pods.len() as f64 / 60.0;
        report.samples.push(Sample {
            t_s: t,
            backlog: backlog.len() as u64,
            outstanding: backlog.len() as u64 + running,
            replicas: pods.iter().filter(|p| p.draining_since.is_none()).count() as u32,
        });
        t += 1.0;
    }
    let replicas: Vec<f64> = report
        .samples
        .iter()
        .map(|s| f64::from(s.replicas))
        .collect();
    report.direction_changes = direction_changes(&replicas);
    report.stranded = scheduled.len() as u64;
    report
}

/// The `p`-quantile (0..=1) of `values` (nearest rank); 0 when empty.
pub fn quantile(values: &[f64], p: f64) -> f64 {
    let mut w = values.to_vec();
    if w.is_empty() {
        return 0.0;
    }
    w.sort_by(f64::total_cmp);
    w[((w.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize]
}

/// Counts direction changes of a series, ignoring flat stretches.
pub fn direction_changes(series: &[f64]) -> usize {
    let mut last = 0i8;
    let mut changes = 0;
    for w in series.windows(2) {
        let d = (w[1] - w[0]).signum() as i8;
        if w[1] != w[0] {
            if last != 0 && d != last {
                changes += 1;
            }
            last = d;
        }
    }
    changes
}

/// Evenly spread arrivals of `duration_s` jobs whose rate (jobs a second) at
/// second `t` is `rate(t)`, for `seconds` seconds.
fn at_rate(seconds: u32, duration_s: f64, rate: impl Fn(f64) -> f64) -> Vec<Arrival> {
    let mut out = Vec::new();
    let mut due = 0.0;
    for t in 0..seconds {
        due += rate(f64::from(t));
        while due >= 1.0 {
            due -= 1.0;
            out.push(Arrival {
                at_s: f64::from(t),
                duration_s,
            });
        }
    }
    out
}

/// Built-in load profiles.
pub fn profile(name: &str) -> Option<(Vec<Arrival>, f64)> {
    let mut out = Vec::new();
    let horizon = match name {
        // 400 encodes of 2 minutes land at once, then nothing.
        "burst" => {
            out.extend((0..400).map(|_| Arrival {
                at_s: 60.0,
                duration_s: 120.0,
            }));
            3600.0
        }
        // 200 long encodes (15 minutes) at once: longer than the default
        // scale-down window, the case where the backlog metric thrashes.
        "long" => {
            out.extend((0..200).map(|_| Arrival {
                at_s: 60.0,
                duration_s: 900.0,
            }));
            5400.0
        }
        // Arrivals rise from 0 to 2 a second over 20 minutes, then stop; 90 s jobs.
        "ramp" => {
            out = at_rate(1200, 90.0, |t| 2.0 * t / 1200.0);
            2400.0
        }
        // A day compressed into two hours: rate follows a sine, 60 s jobs.
        "diurnal" => {
            out = at_rate(7200, 60.0, |t| {
                0.8 * (1.0 - (std::f64::consts::TAU * t / 7200.0).cos()) / 2.0
            });
            7800.0
        }
        _ => return None,
    };
    Some((out, horizon))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_loads_parse_and_name_their_bad_line() {
        let (load, horizon) = parse_load_csv("arrival_s,duration_s\n# a comment\n0,10\n\n5.5, 2\n")
            .unwrap_or_default();
        assert_eq!(load.len(), 2);
        assert_eq!(
            load[1],
            Arrival {
                at_s: 5.5,
                duration_s: 2.0
            }
        );
        assert!((horizon - (10.0 * 1.5 + 600.0)).abs() < 1e-9);
        assert_eq!(parse_load_csv("0,1\nsoon,2\n").err(), Some(2));
        assert_eq!(parse_load_csv("0,-1\n").err(), Some(1));
        assert_eq!(parse_load_csv("nan,1\n").err(), Some(1));
    }
    use crate::ScalerSpec;

    fn spec() -> ScalerSpec {
        ScalerSpec {
            min: 1,
            max: 50,
            polling_s: 10.0,
            target: 4.0,
            ..ScalerSpec::default()
        }
    }

    #[test]
    fn a_burst_completes_and_the_fleet_returns_to_its_floor() {
        let fleet = FleetSpec {
            slots: 4,
            pod_start_s: 30.0,
            drain_s: 25.0,
            initial: 1,
            due: DueWork::Ready,
            chunking: None,
        };
        let (load, horizon) = profile("burst").unwrap_or_default();
        let r = simulate(spec(), &fleet, Metric::Outstanding, &load, horizon);
        assert_eq!(r.completed, 400);
        assert_eq!(r.samples.last().map(|s| s.replicas), Some(1));
        assert!(r.samples.iter().any(|s| s.replicas == 50));
        assert_eq!(r.released, 0, "outstanding work never drains running jobs");
    }

    #[test]
    fn backlog_scaling_releases_long_jobs_and_thrashes() {
        let fleet = FleetSpec {
            slots: 4,
            pod_start_s: 30.0,
            drain_s: 25.0,
            initial: 1,
            due: DueWork::Ready,
            chunking: None,
        };
        let (load, horizon) = profile("burst").unwrap_or_default();
        let mut s = spec();
        s.down.stabilization_s = 60.0;
        let out = simulate(s.clone(), &fleet, Metric::Outstanding, &load, horizon);
        let back = simulate(s, &fleet, Metric::Backlog, &load, horizon);
        assert!(back.released > 0 && back.direction_changes > out.direction_changes);
        assert!(back.replica_minutes > out.replica_minutes * 0.5);
    }

    /// A fleet at zero runs delayed work only when something promotes it:
    /// with the promoter every job runs; with workers alone, jobs that come
    /// due while the fleet is at zero stay stranded.
    #[test]
    fn a_fleet_at_zero_runs_due_work_only_with_a_promoter() {
        let mut s = spec();
        s.min = 0;
        s.cooldown_s = 60.0;
        let load: Vec<Arrival> = [0.0, 5.0, 600.0, 1200.0]
            .iter()
            .map(|&at_s| Arrival {
                at_s,
                duration_s: 30.0,
            })
            .collect();
        let fleet = |due| FleetSpec {
            chunking: None,
            slots: 4,
            pod_start_s: 10.0,
            drain_s: 25.0,
            initial: 0,
            due,
        };
        let with = simulate(
            s.clone(),
            &fleet(DueWork::Promoter(1.0)),
            Metric::Outstanding,
            &load,
            1800.0,
        );
        assert_eq!((with.completed, with.stranded), (4, 0));
        assert!(
            with.wait_quantile(1.0) <= 10.0 + 10.0 + 2.0,
            "{:?}",
            with.waits_s
        );
        let without = simulate(
            s,
            &fleet(DueWork::WorkersOnly),
            Metric::Outstanding,
            &load,
            1800.0,
        );
        assert_eq!((without.completed, without.stranded), (0, 4));
    }

    /// An hour-long encode on a fixed fleet of ten one-slot pods: whole, it
    /// takes the hour; chunked into minutes, about a tenth of it plus the
    /// plan and the join, and the fleet is busy while it runs.
    #[test]
    fn chunked_encodes_finish_close_to_n_times_sooner() {
        let s = ScalerSpec {
            min: 10,
            max: 10,
            polling_s: 10.0,
            target: 1.0,
            ..ScalerSpec::default()
        };
        let mut fleet = FleetSpec {
            slots: 1,
            pod_start_s: 30.0,
            drain_s: 25.0,
            initial: 10,
            due: DueWork::Ready,
            chunking: None,
        };
        let load = [Arrival {
            at_s: 0.0,
            duration_s: 3600.0,
        }];
        let whole = simulate(s.clone(), &fleet, Metric::Outstanding, &load, 5000.0);
        fleet.chunking = Some(ChunkModel {
            chunk_s: 60.0,
            plan_fraction: 0.001,
            audio_fraction: 0.0,
            join_fraction: 0.02,
        });
        let chunked = simulate(s, &fleet, Metric::Outstanding, &load, 5000.0);
        assert_eq!((whole.completed, chunked.completed), (1, 1));
        let (w, c) = (whole.latencies_s[0], chunked.latencies_s[0]);
        assert!((w - 3600.0).abs() <= 2.0, "whole: {w} s");
        // 60 chunks on 10 slots: 6 rounds of 60 s, a 4 s plan, a 72 s join.
        assert!((430.0..=445.0).contains(&c), "chunked: {c} s");
    }
}
