//! GPU discovery and telemetry through NVML.
//!
//! NVML is loaded at run time (`libnvidia-ml.so.1`, mounted by the NVIDIA
//! container toolkit). Where it is absent (CPU nodes, CI) discovery answers "no
//! GPU" with the reason once, and telemetry exports nothing: no error spam.

pub use crate::hw::{check_cuda_device, nvdec_codecs};
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

/// How many NVENC sessions really open at once on `gpu`, up to `max`:
/// small `h264_nvenc` encoders are opened one after another and held until
/// one is refused (consumer drivers cap sessions per system; datacenter
/// parts do not), then all are closed. Returns the count and, when fewer
/// than `max` opened, what FFmpeg said about the next one.
pub fn probe_sessions(gpu: u32, max: usize) -> (usize, Option<String>) {
    use ffmpeg_next as ff;
    if let Err(e) = ff::init() {
        return (0, Some(format!("FFmpeg did not initialise: {e}")));
    }
    let Some(codec) = ff::encoder::find_by_name("h264_nvenc") else {
        return (0, Some("this FFmpeg has no h264_nvenc".into()));
    };
    let mut open = Vec::new();
    while open.len() < max {
        let ctx = ff::codec::Context::new_with_codec(codec);
        let mut enc = match ctx.encoder().video() {
            Ok(e) => e,
            Err(e) => return (open.len(), Some(format!("allocating an encoder: {e}"))),
        };
        enc.set_width(256);
        enc.set_height(144);
        enc.set_format(ff::format::Pixel::YUV420P);
        enc.set_time_base((1, 25));
        enc.set_frame_rate(Some((25, 1)));
        for (k, v) in [("gpu", gpu.to_string()), ("preset", "p1".into())] {
            if let Err(why) = crate::ffi::set_codec_option(&mut enc, k, &v) {
                return (open.len(), Some(format!("h264_nvenc: {k}={v}: {why}")));
            }
        }
        match enc.open_with(ff::Dictionary::new()) {
            Ok(e) => open.push(e),
            Err(e) => {
                return (
                    open.len(),
                    Some(format!("session {} did not open: {e}", open.len() + 1)),
                );
            }
        }
    }
    (open.len(), None)
}

/// Caps the NVENC sessions this process opens per GPU, so concurrency stays
/// within what the card holds (found by [`probe_sessions`] at start; a
/// session over the limit would fail at open).
#[derive(Debug, Clone)]
pub struct SessionCap {
    limits: Arc<Vec<usize>>,
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
        Self::with_limits(vec![per_gpu; gpus])
    }

    /// Allows `limits[i]` sessions on GPU `i`, and exports each as
    /// `spool_gpu_nvenc_sessions_max{gpu}`.
    pub fn with_limits(limits: Vec<usize>) -> Self {
        for (i, l) in limits.iter().enumerate() {
            metrics::gauge!(metric::NVENC_SESSIONS_MAX, "gpu" => i.to_string()).set(*l as f64);
        }
        SessionCap {
            open: Arc::new(limits.iter().map(|_| AtomicUsize::new(0)).collect()),
            limits: Arc::new(limits),
        }
    }

    /// Sessions allowed on all GPUs together.
    pub fn total(&self) -> usize {
        self.limits.iter().sum()
    }

    /// Takes a slot on the least loaded GPU with room, or `None` when all
    /// are full: fewest sessions held by this process first, then the
    /// lowest NVENC utilisation NVML reports (other processes' work).
    pub fn acquire(&self) -> Option<(u32, SessionSlot)> {
        let util: Vec<f64> = sample().iter().map(|s| s.encoder_utilization).collect();
        self.acquire_by_load(&util)
    }

    /// [`SessionCap::acquire`] with each GPU's NVENC utilisation given
    /// (0..1, by index; missing counts as 0).
    pub fn acquire_by_load(&self, utilization: &[f64]) -> Option<(u32, SessionSlot)> {
        let mut order: Vec<usize> = (0..self.open.len()).collect();
        order.sort_by(|&a, &b| {
            let load = |i: usize| {
                (
                    self.open[i].load(Ordering::SeqCst),
                    utilization.get(i).copied().unwrap_or(0.0),
                )
            };
            let (sa, ua) = load(a);
            let (sb, ub) = load(b);
            sa.cmp(&sb).then(ua.total_cmp(&ub))
        });
        for gpu in order {
            let slot = &self.open[gpu];
            let limit = self.limits[gpu];
            let mut cur = slot.load(Ordering::SeqCst);
            while cur < limit {
                match slot.compare_exchange(cur, cur + 1, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => {
                        metrics::gauge!(metric::NVENC_SESSIONS_IN_USE, "gpu" => gpu.to_string())
                            .increment(1.0);
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
        metrics::gauge!(metric::NVENC_SESSIONS_IN_USE, "gpu" => self.gpu.to_string())
            .decrement(1.0);
    }
}

/// What `spool-encoder-worker --gpu-report` prints, the first check on a new
/// GPU node: discovery, a live sample, the NVENC session probe per GPU (up
/// to `nvenc_cap`), whether a CUDA device context opens on each, and which
/// NVENC, CPU and NVDEC codecs this FFmpeg has.
pub fn report(nvenc_cap: usize) -> serde_json::Value {
    let probe = probe();
    let sessions: Vec<serde_json::Value> = probe
        .nvenc_gpus()
        .map(|g| {
            let (n, why) = probe_sessions(g.index, nvenc_cap);
            serde_json::json!({"gpu": g.index, "sessions_opened": n, "cap": nvenc_cap, "stopped_by": why})
        })
        .collect();
    // A CUDA device context on each GPU found (GPU 0 when none was): what
    // the NVDEC decode stage needs.
    let indexes: Vec<u32> = if probe.gpus.is_empty() {
        vec![0]
    } else {
        probe.gpus.iter().map(|g| g.index).collect()
    };
    let cuda: Vec<serde_json::Value> = indexes
        .into_iter()
        .map(|gpu| match crate::hw::check_cuda_device(gpu) {
            Ok(()) => serde_json::json!({"gpu": gpu, "opens": true}),
            Err(why) => serde_json::json!({"gpu": gpu, "opens": false, "why": why}),
        })
        .collect();
    let encoders: Vec<&str> = [
        "h264_nvenc",
        "hevc_nvenc",
        "av1_nvenc",
        "libx264",
        "libx265",
        "libsvtav1",
    ]
    .into_iter()
    .filter(|e| crate::backend::check_options(e, &[]).unwrap_or(false))
    .collect();
    serde_json::json!({
        "gpus": probe.gpus,
        "samples": sample(),
        "no_nvenc_reason": probe.reason,
        "nvenc_sessions": sessions,
        "encoders_in_ffmpeg": encoders,
        "nvdec_decoders_in_ffmpeg": crate::hw::nvdec_codecs(),
        "cuda_devices": cuda,
    })
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
    fn per_gpu_limits_hold_and_load_breaks_ties() {
        // GPU 0 holds one session, GPU 1 three (as a probe might find on
        // a consumer card next to a datacenter one).
        let cap = SessionCap::with_limits(vec![1, 3]);
        assert_eq!(cap.total(), 4);
        // Equal sessions: the GPU with less NVENC load from elsewhere wins.
        let first = cap.acquire_by_load(&[0.9, 0.1]);
        assert_eq!(first.as_ref().map(|x| x.0), Some(1));
        let held: Vec<_> = (0..3)
            .filter_map(|_| cap.acquire_by_load(&[0.9, 0.1]))
            .collect();
        assert_eq!(
            held.len(),
            3,
            "one more on GPU 1, one on GPU 0, one on GPU 1"
        );
        assert!(cap.acquire_by_load(&[0.0, 0.0]).is_none(), "all four held");
        assert_eq!(held.iter().filter(|(g, _)| *g == 0).count(), 1);
    }

    #[test]
    fn the_session_probe_opens_none_without_nvenc_and_says_why() {
        // No NVENC on this machine (CI, or an H100): nothing opens, and the
        // reason is FFmpeg's own. With NVENC it would count real sessions.
        if probe().nvenc_gpus().count() > 0 {
            let (n, _) = probe_sessions(0, 2);
            assert!(n >= 1, "an NVENC GPU opened no session");
            return;
        }
        let (n, why) = probe_sessions(0, 2);
        assert_eq!(n, 0);
        let why = why.unwrap_or_default();
        assert!(why.contains("did not open"), "{why}");
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
