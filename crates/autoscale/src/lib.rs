//! What KEDA and the Kubernetes HPA do with a queue metric, as a pure model.
//!
//! KEDA polls the metric (here: the size of the queue's outstanding-work or
//! backlog key) every `polling_interval`; it alone decides activation (scale
//! from zero when the metric exceeds `activation`, and back to zero after
//! `cooldown` without activity). Between one and `max` replicas the HPA
//! decides, with an `AverageValue` target of `target` per pod:
//!
//! 1. `ratio = metric / (target × current)`; within the 10 % tolerance
//!    nothing changes, else `recommendation = ceil(metric / target)`.
//! 2. Stabilisation: scale-down takes the *highest* recommendation of the last
//!    `scale_down.stabilization` (default 300 s), scale-up the *lowest* of the
//!    last `scale_up.stabilization` (default 0).
//! 3. Rate limits: each direction's policies (Pods or Percent per period)
//!    bound the change against the replica count at the start of the period;
//!    `select` picks the most (Max) or least (Min) permissive.
//! 4. Clamp to `[max(min, 1), max]`.
//!
//! Defaults are Kubernetes' (`autoscaling/v2` `behavior`): scale-up allows the
//! larger of +100 % or +4 pods per 15 s, scale-down −100 % per 15 s after a
//! 300 s window. [`Autoscaler::step`] takes the time and the metric and returns
//! the replica count, so the simulator and the scale tests share one model.

pub mod jobs;
pub mod manifest;
pub mod plot;
pub mod sim;

use std::collections::VecDeque;

/// The HPA's tolerance: ratios within 10 % of 1 change nothing.
pub const TOLERANCE: f64 = 0.1;

/// One rate-limit policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// At most this many pods per period.
    Pods {
        /// Pods.
        value: u32,
        /// Period, seconds.
        period_s: f64,
    },
    /// At most this percentage of the replicas at the period's start.
    Percent {
        /// Percent.
        value: u32,
        /// Period, seconds.
        period_s: f64,
    },
}

/// How policies combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The policy allowing the largest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No change in this direction at all.
    Disabled,
}

/// One direction's behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Stabilisation window, seconds.
    pub stabilization_s: f64,
    /// Rate limits.
    pub policies: Vec<Policy>,
    /// How they combine.
    pub select: Select,
}

impl Rules {
    /// Kubernetes' default for scaling up.
    pub fn default_up() -> Self {
        Rules {
            stabilization_s: 0.0,
            policies: vec![
                Policy::Percent {
                    value: 100,
                    period_s: 15.0,
                },
                Policy::Pods {
                    value: 4,
                    period_s: 15.0,
                },
            ],
            select: Select::Max,
        }
    }

    /// Kubernetes' default for scaling down.
    pub fn default_down() -> Self {
        Rules {
            stabilization_s: 300.0,
            policies: vec![Policy::Percent {
                value: 100,
                period_s: 15.0,
            }],
            select: Select::Max,
        }
    }
}

/// A ScaledObject's settings that matter for scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalerSpec {
    /// `minReplicaCount` (0 allows scale to zero).
    pub min: u32,
    /// `maxReplicaCount`.
    pub max: u32,
    /// `pollingInterval`, seconds.
    pub polling_s: f64,
    /// `cooldownPeriod`, seconds (only for the last replica to zero).
    pub cooldown_s: f64,
    /// Target per pod (`listLength`).
    pub target: f64,
    /// `activationListLength`: the metric must exceed it to be active.
    pub activation: f64,
    /// Scale-up behaviour.
    pub up: Rules,
    /// Scale-down behaviour.
    pub down: Rules,
}

impl Default for ScalerSpec {
    fn default() -> Self {
        ScalerSpec {
            min: 0,
            max: 100,
            polling_s: 30.0,
            cooldown_s: 300.0,
            target: 5.0,
            activation: 0.0,
            up: Rules::default_up(),
            down: Rules::default_down(),
        }
    }
}

/// The autoscaler's state between steps.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    spec: ScalerSpec,
    replicas: u32,
    /// (time, recommendation) within the longest stabilisation window.
    recommendations: VecDeque<(f64, u32)>,
    /// (time, replicas after) of every change, for the rate limits.
    events: VecDeque<(f64, u32)>,
    /// Last time the metric was active (for the cooldown to zero).
    last_active: Option<f64>,
}

impl Autoscaler {
    /// Starts at `replicas`.
    pub fn new(spec: ScalerSpec, replicas: u32) -> Self {
        Autoscaler {
            spec,
            replicas,
            recommendations: VecDeque::new(),
            events: VecDeque::new(),
            last_active: None,
        }
    }

    /// The settings.
    pub fn spec(&self) -> &ScalerSpec {
        &self.spec
    }

    /// The current replica count.
    pub fn replicas(&self) -> u32 {
        self.replicas
    }

    /// Feeds one observation of `metric` at time `now_s` (seconds, monotonic)
    /// and returns the replica count to run from now on.
    pub fn step(&mut self, now_s: f64, metric: f64) -> u32 {
        let active = metric > self.spec.activation;
        if active {
            self.last_active = Some(now_s);
        }
        let floor = self.spec.min.max(1);
        let before = self.replicas;
        let next = if self.replicas == 0 {
            // KEDA alone activates from zero, to the HPA's floor.
            if active { floor.min(self.spec.max) } else { 0 }
        } else if !active
            && self.spec.min == 0
            && self
                .last_active
                .is_none_or(|t| now_s - t >= self.spec.cooldown_s)
        {
            // KEDA deactivates after the cooldown.
            self.recommendations.clear();
            0
        } else {
            self.hpa(now_s, metric, floor)
        };
        if next != before {
            self.events.push_back((now_s, before));
            self.replicas = next;
        }
        self.replicas
    }

    fn hpa(&mut self, now: f64, metric: f64, floor: u32) -> u32 {
        let current = self.replicas;
        let ratio = metric / (self.spec.target * f64::from(current));
        let raw = if (ratio - 1.0).abs() <= TOLERANCE {
            current
        } else {
            (metric / self.spec.target).ceil().max(0.0) as u32
        };
        let raw = raw.clamp(floor, self.spec.max);
        self.recommendations.push_back((now, raw));
        let keep = self
            .spec
            .up
            .stabilization_s
            .max(self.spec.down.stabilization_s);
        while self
            .recommendations
            .front()
            .is_some_and(|(t, _)| now - t > keep)
        {
            self.recommendations.pop_front();
        }
        let within = |w: f64| {
            self.recommendations
                .iter()
                .filter(move |(t, _)| now - t <= w)
                .map(|(_, r)| *r)
        };
        let up_cap = within(self.spec.up.stabilization_s).min().unwrap_or(raw);
        let down_floor = within(self.spec.down.stabilization_s).max().unwrap_or(raw);
        let stabilized = if raw > current {
            up_cap.max(current).min(raw)
        } else if raw < current {
            down_floor.min(current).max(raw)
        } else {
            current
        };
        let limited = if stabilized > current {
            stabilized.min(self.limit(now, &self.spec.up, true))
        } else if stabilized < current {
            stabilized.max(self.limit(now, &self.spec.down, false))
        } else {
            current
        };
        limited.clamp(floor, self.spec.max)
    }

    /// The most (scaling up) or least (down) replicas the policies allow now.
    fn limit(&self, now: f64, rules: &Rules, up: bool) -> u32 {
        let current = self.replicas;
        if rules.select == Select::Disabled || rules.policies.is_empty() {
            return current;
        }
        let bounds = rules.policies.iter().map(|p| {
            let period = match p {
                Policy::Pods { period_s, .. } | Policy::Percent { period_s, .. } => *period_s,
            };
            // The replica count at the start of the period: the count before
            // the earliest change inside it.
            let start = self
                .events
                .iter()
                .find(|(t, _)| now - t < period)
                .map_or(current, |(_, before)| *before);
            match (p, up) {
                (Policy::Pods { value, .. }, true) => start + value,
                (Policy::Pods { value, .. }, false) => start.saturating_sub(*value),
                (Policy::Percent { value, .. }, true) => {
                    (f64::from(start) * (1.0 + f64::from(*value) / 100.0)).ceil() as u32
                }
                (Policy::Percent { value, .. }, false) => (f64::from(start)
                    * (1.0 - f64::from(*value) / 100.0))
                    .ceil()
                    .max(0.0) as u32,
            }
        });
        let chosen = match (rules.select, up) {
            (Select::Max, true) | (Select::Min, false) => bounds.max(),
            _ => bounds.min(),
        };
        chosen.unwrap_or(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(target: f64) -> ScalerSpec {
        ScalerSpec {
            min: 1,
            max: 100,
            polling_s: 15.0,
            target,
            ..ScalerSpec::default()
        }
    }

    #[test]
    fn desired_is_ceil_of_metric_over_target() {
        let mut a = Autoscaler::new(spec(5.0), 1);
        // 12 / 5 = 2.4 → 3 (within the +100 % / +4 pods default).
        assert_eq!(a.step(0.0, 12.0), 3);
    }

    #[test]
    fn within_ten_percent_tolerance_nothing_changes() {
        let mut a = Autoscaler::new(spec(10.0), 4);
        // ratio 42 / 40 = 1.05: inside the tolerance.
        assert_eq!(a.step(0.0, 42.0), 4);
        // ratio 45 / 40 = 1.125: outside; ceil(4.5) = 5.
        assert_eq!(a.step(15.0, 45.0), 5);
    }

    #[test]
    fn default_scale_up_is_max_of_double_or_plus_four_per_15s() {
        // From the Kubernetes docs: the default scale-up policy allows 100 %
        // or 4 pods, whichever is more, every 15 seconds.
        let mut a = Autoscaler::new(spec(1.0), 1);
        assert_eq!(a.step(0.0, 40.0), 5, "1 → max(2, 5)");
        assert_eq!(a.step(15.0, 40.0), 10, "5 → max(10, 9)");
        assert_eq!(a.step(30.0, 40.0), 20);
        assert_eq!(a.step(45.0, 40.0), 40);
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let mut a = Autoscaler::new(spec(1.0), 10);
        assert_eq!(a.step(0.0, 10.0), 10);
        // The load drops: for 300 s the highest recommendation (10) holds.
        for t in (15..300).step_by(15) {
            assert_eq!(a.step(t as f64, 2.0), 10, "at {t} s");
        }
        assert_eq!(a.step(315.0, 2.0), 2, "after the window");
    }

    #[test]
    fn a_pods_policy_limits_scale_down_per_period() {
        // From the docs: "scaleDown: policies: [{type: Pods, value: 4, periodSeconds: 60}]"
        let mut s = spec(1.0);
        s.down = Rules {
            stabilization_s: 0.0,
            policies: vec![Policy::Pods {
                value: 4,
                period_s: 60.0,
            }],
            select: Select::Max,
        };
        let mut a = Autoscaler::new(s, 20);
        assert_eq!(a.step(0.0, 1.0), 16);
        assert_eq!(a.step(30.0, 1.0), 16, "4 pods per 60 s already used");
        assert_eq!(a.step(61.0, 1.0), 12);
    }

    #[test]
    fn keda_activates_from_zero_and_returns_to_zero_after_cooldown() {
        let mut s = spec(1.0);
        s.min = 0;
        s.cooldown_s = 60.0;
        let mut a = Autoscaler::new(s, 0);
        assert_eq!(a.step(0.0, 0.0), 0, "inactive stays at zero");
        assert_eq!(a.step(10.0, 3.0), 1, "activation goes to one replica");
        assert_eq!(a.step(25.0, 3.0), 3, "then the HPA takes over");
        assert_eq!(a.step(40.0, 0.0), 3, "inactive, but within the cooldown");
        assert_eq!(a.step(86.0, 0.0), 0, "cooldown over");
    }

    #[test]
    fn disabled_scale_down_never_shrinks() {
        let mut s = spec(1.0);
        s.down.select = Select::Disabled;
        s.down.stabilization_s = 0.0;
        let mut a = Autoscaler::new(s, 5);
        assert_eq!(a.step(0.0, 1.0), 5);
        assert_eq!(a.step(1000.0, 1.0), 5);
    }
}
