//! Reads the scaling settings out of Kubernetes manifests: a ScaledObject (and
//! the Deployment's grace period), as `kubectl kustomize` renders them.

use serde_yaml::Value;

use crate::sim::Metric;
use crate::{Policy, Rules, ScalerSpec, Select};

/// A manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(String);

/// What the manifests say.
#[derive(Debug, Clone)]
pub struct Scaling {
    /// The scaler's settings.
    pub spec: ScalerSpec,
    /// The metric the trigger reads (from its `listName`).
    pub metric: Metric,
    /// The Deployment's `terminationGracePeriodSeconds` (30 when absent).
    pub grace_s: f64,
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn rules(v: &Value, default: Rules) -> Result<Rules, ManifestError> {
    if v.is_null() {
        return Ok(default);
    }
    let mut r = default;
    if let Some(w) = num(&v["stabilizationWindowSeconds"]) {
        r.stabilization_s = w;
    }
    if let Some(sel) = v["selectPolicy"].as_str() {
        r.select = match sel {
            "Max" => Select::Max,
            "Min" => Select::Min,
            "Disabled" => Select::Disabled,
            other => return Err(ManifestError(format!("unknown selectPolicy {other:?}"))),
        };
    }
    if let Some(ps) = v["policies"].as_sequence() {
        r.policies = ps
            .iter()
            .map(|p| {
                let value = num(&p["value"])
                    .ok_or_else(|| ManifestError("a policy has no value".into()))?
                    as u32;
                let period_s = num(&p["periodSeconds"])
                    .ok_or_else(|| ManifestError("a policy has no periodSeconds".into()))?;
                match p["type"].as_str() {
                    Some("Pods") => Ok(Policy::Pods { value, period_s }),
                    Some("Percent") => Ok(Policy::Percent { value, period_s }),
                    other => Err(ManifestError(format!("unknown policy type {other:?}"))),
                }
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(r)
}

/// Parses the first ScaledObject (and a Deployment's grace period) in a YAML
/// stream of one or more documents.
pub fn parse(yaml: &str) -> Result<Scaling, ManifestError> {
    let mut so = None;
    let mut grace_s = 30.0;
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc).map_err(|e| ManifestError(format!("not YAML: {e}")))?;
        match v["kind"].as_str() {
            Some("ScaledObject") if so.is_none() => so = Some(v),
            Some("Deployment") => {
                if let Some(g) =
                    num(&v["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
                {
                    grace_s = g;
                }
            }
            _ => {}
        }
    }
    let so = so.ok_or_else(|| ManifestError("no ScaledObject in the manifest".into()))?;
    let s = &so["spec"];
    let trigger = &s["triggers"][0];
    let meta = &trigger["metadata"];
    let target = num(&meta["listLength"])
        .or_else(|| num(&meta["threshold"]))
        .ok_or_else(|| ManifestError("the first trigger has no listLength or threshold".into()))?;
    let activation = num(&meta["activationListLength"])
        .or_else(|| num(&meta["activationThreshold"]))
        .unwrap_or(0.0);
    let metric = match meta["listName"].as_str() {
        Some(k) if k.ends_with(":ready") => Metric::Backlog,
        _ => Metric::Outstanding,
    };
    let behavior = &s["advanced"]["horizontalPodAutoscalerConfig"]["behavior"];
    let spec = ScalerSpec {
        min: num(&s["minReplicaCount"]).unwrap_or(0.0) as u32,
        max: num(&s["maxReplicaCount"]).unwrap_or(100.0) as u32,
        polling_s: num(&s["pollingInterval"]).unwrap_or(30.0),
        cooldown_s: num(&s["cooldownPeriod"]).unwrap_or(300.0),
        target,
        activation,
        up: rules(&behavior["scaleUp"], Rules::default_up())?,
        down: rules(&behavior["scaleDown"], Rules::default_down())?,
    };
    Ok(Scaling {
        spec,
        metric,
        grace_s,
    })
}

/// Parses the first ScaledJob in a YAML stream, when there is one:
/// `Ok(None)` when the manifest holds none.
pub fn parse_scaled_job(
    yaml: &str,
) -> Result<Option<(crate::jobs::ScaledJobSpec, Metric)>, ManifestError> {
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc).map_err(|e| ManifestError(format!("not YAML: {e}")))?;
        if v["kind"].as_str() != Some("ScaledJob") {
            continue;
        }
        let s = &v["spec"];
        let meta = &s["triggers"][0]["metadata"];
        let target = num(&meta["listLength"])
            .or_else(|| num(&meta["threshold"]))
            .ok_or_else(|| {
                ManifestError("the ScaledJob's first trigger has no listLength".into())
            })?;
        let name = s["scalingStrategy"]["strategy"]
            .as_str()
            .unwrap_or("default");
        let strategy = crate::jobs::JobStrategy::parse(name).ok_or_else(|| {
            ManifestError(format!(
                "scalingStrategy {name:?} is not modelled (default, accurate, eager)"
            ))
        })?;
        let metric = match meta["listName"].as_str() {
            Some(k) if k.ends_with(":ready") => Metric::Backlog,
            _ => Metric::Outstanding,
        };
        return Ok(Some((
            crate::jobs::ScaledJobSpec {
                polling_s: num(&s["pollingInterval"]).unwrap_or(30.0),
                max_replicas: num(&s["maxReplicaCount"]).unwrap_or(100.0) as u32,
                target,
                strategy,
            },
            metric,
        )));
    }
    Ok(None)
}

use serde::Deserialize as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scaledjob_component_parses() -> Result<(), ManifestError> {
        let text = include_str!("../../../deploy/k8s/components/keda-scaledjob/scaledjob.yaml");
        let (spec, metric) =
            parse_scaled_job(text)?.ok_or_else(|| ManifestError("no ScaledJob".into()))?;
        assert_eq!(metric, Metric::Outstanding);
        assert_eq!(spec.strategy, crate::jobs::JobStrategy::Default);
        assert_eq!(
            (spec.max_replicas, spec.target, spec.polling_s),
            (20, 1.0, 10.0)
        );
        let none = include_str!("../../../deploy/k8s/components/keda/scaledobject.yaml");
        assert!(parse_scaled_job(none)?.is_none());
        Ok(())
    }

    #[test]
    fn the_keda_component_parses() -> Result<(), ManifestError> {
        let text = include_str!("../../../deploy/k8s/components/keda/scaledobject.yaml");
        let s = parse(text)?;
        assert_eq!(s.metric, Metric::Outstanding);
        assert_eq!((s.spec.min, s.spec.max), (0, 20));
        assert_eq!(s.spec.target, 1.0);
        assert_eq!(s.spec.down.stabilization_s, 300.0);
        assert_eq!(s.spec.up.policies.len(), 2);
        Ok(())
    }
}
