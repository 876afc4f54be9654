//! GPU discovery and telemetry through NVML.
//!
//! NVML is loaded at run time (`libnvidia-ml.so.1`, mounted by the NVIDIA
//! container toolkit). Where it is absent (CPU nodes, CI) discovery answers "no
//! GPU" with the reason once, and telemetry exports nothing: no error spam.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::EncoderType;

use crate::metrics as metric;

/// One GPU as NVML sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GpuInfo {
    /// NVML index (the `gpu` option of the NVENC encoders).
    pub index: u32,
    /// Marketing name.
    pub name: String,
    /// H.264 encoder capacity in percent (0: no NVENC on this GPU).
    pub encoder_capacity: u32,
    /// Memory in all, bytes.
    pub memory_total: u64,
}

/// What discovery found.
#[derive(Debug, Clone)]
pub struct GpuProbe {
    /// GPUs found (empty without NVML).
    pub gpus: Vec<GpuInfo>,
    /// Why there is no usable GPU, when there is none.
    pub reason: Option<String>,
}

impl GpuProbe {
    /// GPUs with NVENC capacity.
    pub fn nvenc_gpus(&self) -> impl Iterator<Item = &GpuInfo> {
        self.gpus.iter().filter(|g| g.encoder_capacity > 0)
    }
}

fn nvml() -> Result<&'static Nvml, String> {
    static NVML: OnceLock<Result<Nvml, String>> = OnceLock::new();
    NVML.get_or_init(|| Nvml::init().map_err(|e| format!("NVML not available ({e})")))
        .as_ref()
        .map_err(Clone::clone)
}

/// Finds the GPUs once per call (cheap: NVML is loaded once per process).
pub fn probe() -> GpuProbe {
    let nvml = match nvml() {
        Ok(n) => n,
        Err(reason) => {
            return GpuProbe {
                gpus: Vec::new(),
                reason: Some(reason),
            };
        }
    };
    let count = nvml.device_count().unwrap_or(0);
    let gpus: Vec<GpuInfo> = (0..count)
        .filter_map(|i| {
            let d = nvml.device_by_index(i).ok()?;
            Some(GpuInfo {
                index: i,
                name: d.name().unwrap_or_else(|_| "unknown".into()),
                encoder_capacity: d.encoder_capacity(EncoderType::H264).unwrap_or(0),
                memory_total: d.memory_info().map(|m| m.total).unwrap_or(0),
            })
        })
        .collect();
    let reason = if gpus.is_empty() {
        Some("NVML found no GPU".to_owned())
    } else if !gpus.iter().any(|g| g.encoder_capacity > 0) {
        Some(format!(
            "no GPU with NVENC capacity ({})",
            gpus.iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    } else {
        None
    };
    GpuProbe { gpus, reason }
}

/// One telemetry sample per GPU, exported as `spool_gpu_*` gauges.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GpuSample {
    /// NVML index.
    pub index: u32,
    /// GPU utilisation, 0..1.
    pub utilization: f64,
    /// NVENC utilisation, 0..1.
    pub encoder_utilization: f64,
    /// Memory in use, bytes.
    pub memory_used: u64,
    /// Memory in all, bytes.
    pub memory_total: u64,
    /// NVENC sessions open.
    pub encoder_sessions: u64,
}

/// Samples every GPU; empty without NVML.
pub fn sample() -> Vec<GpuSample> {
    let Ok(nvml) = nvml() else { return Vec::new() };
    let count = nvml.device_count().unwrap_or(0);
    (0..count)
        .filter_map(|i| {
            let d = nvml.device_by_index(i).ok()?;
            let util = d.utilization_rates().ok();
            let mem = d.memory_info().ok();
            Some(GpuSample {
                index: i,
                utilization: util.as_ref().map_or(0.0, |u| u.gpu as f64 / 100.0),
                encoder_utilization: d
                    .encoder_utilization()
                    .map_or(0.0, |u| u.utilization as f64 / 100.0),
                memory_used: mem.as_ref().map_or(0, |m| m.used),
                memory_total: mem.as_ref().map_or(0, |m| m.total),
                encoder_sessions: d.encoder_stats().map_or(0, |s| s.session_count as u64),
            })
        })
        .collect()
}

/// Samples and sets the `spool_gpu_*` gauges; does nothing without NVML.
pub fn export_metrics() -> usize {
    let samples = sample();
    for s in &samples {
        let gpu = s.index.to_string();
        metrics::gauge!(metric::UTILIZATION, "gpu" => gpu.clone()).set(s.utilization);
        metrics::gauge!(metric::ENCODER_UTILIZATION, "gpu" => gpu.clone())
            .set(s.encoder_utilization);
        metrics::gauge!(metric::MEMORY_USED, "gpu" => gpu.clone()).set(s.memory_used as f64);
        metrics::gauge!(metric::MEMORY_TOTAL, "gpu" => gpu.clone()).set(s.memory_total as f64);
        metrics::gauge!(metric::ENCODER_SESSIONS, "gpu" => gpu).set(s.encoder_sessions as f64);
    }
    samples.len()
}

/// Caps the NVENC sessions this process opens per GPU, so concurrency stays
/// within what the card holds (consumer cards allow a handful; a session over
/// the limit fails at open).
#[derive(Debug, Clone)]
pub struct SessionCap {
    per_gpu: usize,
    open: Arc<Vec<AtomicUsize>>,
}

/// A held NVENC session slot; freed on drop.
#[derive(Debug)]
pub struct SessionSlot {
    open: Arc<Vec<AtomicUsize>>,
    gpu: usize,
}

impl SessionCap {
    /// Allows `per_gpu` sessions on each of `gpus` GPUs.
    pub fn new(gpus: usize, per_gpu: usize) -> Self {
        SessionCap {
            per_gpu,
            open: Arc::new((0..gpus).map(|_| AtomicUsize::new(0)).collect()),
        }
    }

    /// Takes a slot on the least busy GPU with room, or `None` when all are full.
    pub fn acquire(&self) -> Option<(u32, SessionSlot)> {
        let mut order: Vec<usize> = (0..self.open.len()).collect();
        order.sort_by_key(|&i| self.open[i].load(Ordering::SeqCst));
        for gpu in order {
            let slot = &self.open[gpu];
            let mut cur = slot.load(Ordering::SeqCst);
            while cur < self.per_gpu {
                match slot.compare_exchange(cur, cur + 1, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => {
                        return Some((
                            gpu as u32,
                            SessionSlot {
                                open: self.open.clone(),
                                gpu,
                            },
                        ));
                    }
                    Err(now) => cur = now,
                }
            }
        }
        None
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.open[self.gpu].fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cap_holds_and_frees() {
        let cap = SessionCap::new(2, 1);
        let a = cap.acquire();
        let b = cap.acquire();
        assert!(a.is_some() && b.is_some());
        assert_ne!(
            a.as_ref().map(|x| x.0),
            b.as_ref().map(|x| x.0),
            "spread over GPUs"
        );
        assert!(cap.acquire().is_none(), "both GPUs are full");
        drop(a);
        assert!(cap.acquire().is_some(), "a freed slot is reusable");
    }

    #[test]
    fn a_probe_gives_a_reason_exactly_when_no_gpu_can_encode() {
        // Without NVML (this CI), or with GPUs that have no NVENC (an H100),
        // the probe must say why; with an NVENC GPU it must not invent one.
        let p = probe();
        let encoders = p.nvenc_gpus().count();
        assert_eq!(
            p.reason.is_none(),
            encoders > 0,
            "reason {:?} with {encoders} NVENC GPUs",
            p.reason
        );
        if let Some(r) = &p.reason {
            assert!(!r.trim().is_empty(), "an empty reason");
        }
    }
}
