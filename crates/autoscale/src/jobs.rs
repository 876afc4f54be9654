//! KEDA ScaledJob: how many Jobs KEDA starts each poll (its three scaling
//! strategies), and a discrete-time simulation of a ScaledJob fleet whose
//! pods take one job each (`SPOOL_MAX_JOBS=1`), run it and exit, or leave
//! after `SPOOL_IDLE_EXIT` when they find nothing.
//!
//! The formulas are KEDA's (`pkg/scaling/executor/scale_jobs.go`, documented
//! under the ScaledJob spec's `scalingStrategy`), with
//! `maxScale = min(ceil(queueLength / targetValue), maxReplicaCount)`, the
//! running count being every Job not finished (pending ones included), and
//! pending being Jobs whose pod is not running yet:
//!
//! - `default`: `maxScale - runningJobCount`
//! - `accurate`: `maxReplicaCount - runningJobCount` when
//!   `maxScale + runningJobCount > maxReplicaCount`, else
//!   `maxScale - pendingJobCount`
//! - `eager`: `min(maxReplicaCount - runningJobCount - pendingJobCount, maxScale)`

use std::collections::VecDeque;

use crate::sim::{Arrival, Metric};

/// KEDA's `scalingStrategy.strategy` for a ScaledJob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStrategy {
    /// New Jobs for the queue minus every unfinished Job.
    Default,
    /// New Jobs for the queue minus the pending ones (for a metric that
    /// excludes work in progress), capped by the free room.
    Accurate,
    /// Fill the free room up to the queue.
    Eager,
}

impl JobStrategy {
    /// Parses `default`, `accurate` or `eager`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "default" => Some(JobStrategy::Default),
            "accurate" => Some(JobStrategy::Accurate),
            "eager" => Some(JobStrategy::Eager),
            _ => None,
        }
    }
}

/// A ScaledJob's scaling settings.
#[derive(Debug, Clone)]
pub struct ScaledJobSpec {
    /// `pollingInterval`, seconds.
    pub polling_s: f64,
    /// `maxReplicaCount`.
    pub max_replicas: u32,
    /// The trigger's target per Job (`listLength`).
    pub target: f64,
    /// `scalingStrategy.strategy`.
    pub strategy: JobStrategy,
}

/// Jobs KEDA creates at one poll.
pub fn new_jobs(
    strategy: JobStrategy,
    queue_length: f64,
    target: f64,
    max_replicas: u32,
    running: u32,
    pending: u32,
) -> u32 {
    let max = i64::from(max_replicas);
    let max_scale = ((queue_length / target.max(f64::MIN_POSITIVE)).ceil() as i64).min(max);
    let (running, pending) = (i64::from(running), i64::from(pending));
    let n = match strategy {
        JobStrategy::Default => max_scale - running,
        JobStrategy::Accurate => {
            if max_scale + running > max {
                max - running
            } else {
                max_scale - pending
            }
        }
        JobStrategy::Eager => (max - running - pending).min(max_scale),
    };
    n.max(0) as u32
}

/// A ScaledJob fleet's timings.
#[derive(Debug, Clone)]
pub struct JobFleet {
    /// From a Job's creation to its pod running (scheduling, image, GPU).
    pub pod_start_s: f64,
    /// From the pod running to its first reserve (process start, NVML).
    pub reserve_s: f64,
    /// `SPOOL_IDLE_EXIT`.
    pub idle_exit_s: f64,
}

/// One sample per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobSample {
    /// Time, seconds.
    pub t_s: f64,
    /// Ready jobs.
    pub backlog: u64,
    /// Unfinished Jobs (pods starting, working or idle).
    pub jobs: u32,
}

/// What a ScaledJob simulation measured.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// The timeline.
    pub samples: Vec<JobSample>,
    /// Wait from arrival to start, seconds, per job.
    pub waits_s: Vec<f64>,
    /// Pod-minutes paid for (pending pods excluded: they hold no node).
    pub replica_minutes: f64,
    /// Jobs finished.
    pub completed: u64,
    /// Jobs (Kubernetes) created.
    pub created: u64,
    /// Jobs that started and found no work (left after the idle exit).
    pub found_nothing: u64,
}

impl JobReport {
    /// The `p`-quantile (0..=1) of the waits.
    pub fn wait_quantile(&self, p: f64) -> f64 {
        crate::sim::quantile(&self.waits_s, p)
    }
}

enum State {
    /// Pod not running yet, until this time.
    Pending(f64),
    /// Running, not reserved yet, until this time.
    Starting(f64),
    /// Polling for work since this time.
    Idle(f64),
    /// Working: seconds left.
    Working(f64),
    Done,
}

/// Runs the simulation for `horizon_s` seconds.
pub fn simulate_jobs(
    spec: &ScaledJobSpec,
    fleet: &JobFleet,
    metric: Metric,
    load: &[Arrival],
    horizon_s: f64,
) -> JobReport {
    let mut load = load.to_vec();
    load.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let mut next = 0;
    let mut backlog: VecDeque<(f64, f64)> = VecDeque::new();
    let mut jobs: Vec<State> = Vec::new();
    let mut r = JobReport {
        samples: Vec::new(),
        waits_s: Vec::new(),
        replica_minutes: 0.0,
        completed: 0,
        created: 0,
        found_nothing: 0,
    };
    let polling = spec.polling_s.max(1.0);
    let mut next_poll = 0.0;
    let mut t = 0.0;
    while t <= horizon_s {
        while next < load.len() && load[next].at_s <= t {
            backlog.push_back((load[next].at_s, load[next].duration_s));
            next += 1;
        }
        for j in &mut jobs {
            match *j {
                State::Pending(until) if until <= t => *j = State::Starting(t + fleet.reserve_s),
                State::Starting(until) if until <= t => *j = State::Idle(t),
                State::Working(left) if left <= 1.0 => {
                    r.completed += 1;
                    *j = State::Done;
                }
                State::Working(left) => *j = State::Working(left - 1.0),
                _ => {}
            }
            if let State::Idle(since) = *j {
                if let Some((arrival, duration)) = backlog.pop_front() {
                    r.waits_s.push(t - arrival);
                    *j = State::Working(duration);
                } else if t - since >= fleet.idle_exit_s {
                    r.found_nothing += 1;
                    *j = State::Done;
                }
            }
        }
        jobs.retain(|j| !matches!(j, State::Done));
        if t >= next_poll {
            next_poll += polling;
            let working = jobs
                .iter()
                .filter(|j| matches!(j, State::Working(_)))
                .count() as f64;
            let queue = match metric {
                Metric::Outstanding => backlog.len() as f64 + working,
                Metric::Backlog => backlog.len() as f64,
            };
            let running = jobs.len() as u32;
            let pending = jobs
                .iter()
                .filter(|j| matches!(j, State::Pending(_)))
                .count() as u32;
            let n = new_jobs(
                spec.strategy,
                queue,
                spec.target,
                spec.max_replicas,
                running,
                pending,
            );
            for _ in 0..n {
                jobs.push(State::Pending(t + fleet.pod_start_s));
            }
            r.created += u64::from(n);
        }
        let holding = jobs
            .iter()
            .filter(|j| !matches!(j, State::Pending(_)))
            .count();
        r.replica_minutes += holding as f64 / 60.0;
        r.samples.push(JobSample {
            t_s: t,
            backlog: backlog.len() as u64,
            jobs: jobs.len() as u32,
        });
        t += 1.0;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keda_formulas_for_each_strategy() {
        use JobStrategy::*;
        // default: maxScale - running; maxScale capped by maxReplicaCount.
        assert_eq!(new_jobs(Default, 10.0, 1.0, 20, 4, 0), 6);
        assert_eq!(new_jobs(Default, 100.0, 1.0, 20, 4, 2), 16);
        assert_eq!(new_jobs(Default, 3.0, 1.0, 20, 5, 0), 0, "never negative");
        assert_eq!(new_jobs(Default, 9.0, 4.0, 20, 0, 0), 3, "ceil(9 / 4)");
        // accurate: room-capped when maxScale + running > max, else minus pending.
        assert_eq!(new_jobs(Accurate, 10.0, 1.0, 20, 15, 3), 5);
        assert_eq!(new_jobs(Accurate, 5.0, 1.0, 20, 3, 2), 3);
        assert_eq!(new_jobs(Accurate, 5.0, 1.0, 20, 10, 0), 5);
        // eager: min(max - running - pending, maxScale).
        assert_eq!(new_jobs(Eager, 5.0, 1.0, 20, 3, 2), 5);
        assert_eq!(new_jobs(Eager, 50.0, 1.0, 20, 3, 2), 15);
        assert_eq!(new_jobs(Eager, 50.0, 1.0, 20, 19, 2), 0);
        assert_eq!(JobStrategy::parse("accurate"), Some(Accurate));
        assert_eq!(JobStrategy::parse("custom"), None);
    }

    fn burst_and_trickle() -> Vec<Arrival> {
        // 20 hour-long encodes at once, then one every 5 minutes for an hour.
        let mut v: Vec<Arrival> = (0..20)
            .map(|_| Arrival {
                at_s: 0.0,
                duration_s: 3600.0,
            })
            .collect();
        v.extend((1..=12).map(|i| Arrival {
            at_s: 300.0 * f64::from(i),
            duration_s: 3600.0,
        }));
        v
    }

    fn run(metric: Metric, strategy: JobStrategy) -> JobReport {
        let r = run_quiet(metric, strategy);
        println!(
            "{metric:?}/{strategy:?}: {} Jobs created, {} found nothing, {} completed, wait p50 {:.0} s max {:.0} s, {:.0} pod-minutes",
            r.created,
            r.found_nothing,
            r.completed,
            r.wait_quantile(0.5),
            r.wait_quantile(1.0),
            r.replica_minutes
        );
        r
    }

    fn run_quiet(metric: Metric, strategy: JobStrategy) -> JobReport {
        let spec = ScaledJobSpec {
            polling_s: 10.0,
            max_replicas: 50,
            target: 1.0,
            strategy,
        };
        // A GPU pod: 40 s to schedule and pull, 20 s from running to its
        // first reserve (longer than the polling interval).
        let fleet = JobFleet {
            pod_start_s: 40.0,
            reserve_s: 20.0,
            idle_exit_s: 60.0,
        };
        simulate_jobs(&spec, &fleet, metric, &burst_and_trickle(), 3.0 * 3600.0)
    }

    #[test]
    fn outstanding_with_default_neither_starves_nor_wastes_starts() {
        let r = run(Metric::Outstanding, JobStrategy::Default);
        assert_eq!(r.completed, 32, "every job done once");
        assert_eq!(r.found_nothing, 0, "no Job started for nothing");
        assert_eq!(r.created, 32);
        assert!(
            r.wait_quantile(1.0) <= 80.0,
            "max wait {}",
            r.wait_quantile(1.0)
        );
    }

    #[test]
    fn eager_on_the_outstanding_key_over_provisions() {
        let r = run(Metric::Outstanding, JobStrategy::Eager);
        assert_eq!(r.completed, 32);
        assert!(
            r.found_nothing > 0,
            "eager fills free room regardless of running Jobs"
        );
    }

    #[test]
    fn backlog_with_accurate_starts_jobs_that_find_nothing() {
        let r = run(Metric::Backlog, JobStrategy::Accurate);
        assert_eq!(r.completed, 32);
        assert!(
            r.found_nothing > 0 && r.created > 32,
            "a pod running but not yet reserved is counted by neither: {} created, {} found nothing",
            r.created,
            r.found_nothing
        );
        // Backlog with default starves: a reserved job leaves the metric
        // but its Job still counts against it.
        let d = run(Metric::Backlog, JobStrategy::Default);
        assert!(
            d.wait_quantile(0.5)
                >= run(Metric::Outstanding, JobStrategy::Default).wait_quantile(0.5),
            "backlog/default waits no less"
        );
    }
}
