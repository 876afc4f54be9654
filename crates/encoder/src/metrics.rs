//! Every metric the encoder and its worker export, named in one place
//! (`docs/operations.md` lists them with the runtime's `spool_*` metrics;
//! a test keeps that table complete).

/// Encodes that wanted NVENC and ran on the CPU (no labels).
pub const NVENC_FALLBACKS: &str = "spool_encode_nvenc_fallbacks_total";
/// Frames encoded (`backend`: `cpu` or `nvenc`).
pub const ENCODE_FRAMES: &str = "spool_encode_frames_total";
/// Encodes finished (`backend`).
pub const ENCODES: &str = "spool_encodes_total";
/// Frames per second of the latest encode (`backend`).
pub const ENCODE_FPS: &str = "spool_encode_fps";

/// GPU utilisation, 0..1 (`gpu`, the index).
pub const UTILIZATION: &str = "spool_gpu_utilization_ratio";
/// NVENC utilisation, 0..1 (`gpu`).
pub const ENCODER_UTILIZATION: &str = "spool_gpu_encoder_utilization_ratio";
/// Memory in use, bytes (`gpu`).
pub const MEMORY_USED: &str = "spool_gpu_memory_used_bytes";
/// Memory in all, bytes (`gpu`).
pub const MEMORY_TOTAL: &str = "spool_gpu_memory_total_bytes";
/// NVENC sessions open on the GPU, all processes (`gpu`).
pub const ENCODER_SESSIONS: &str = "spool_gpu_encoder_sessions";
/// NVENC sessions this process found it can open on the GPU at start
/// (`gpu`): the cap on its concurrent NVENC encodes there.
pub const NVENC_SESSIONS_MAX: &str = "spool_gpu_nvenc_sessions_max";
/// NVENC sessions this process holds on the GPU now (`gpu`).
pub const NVENC_SESSIONS_IN_USE: &str = "spool_gpu_nvenc_sessions_in_use";

pub use spool_storage::metrics::{
    STORAGE_BYTES, STORAGE_OUTAGE_RETRIES, STORAGE_REQUESTS, STORAGE_SECONDS,
};

/// Every name above, for the docs check.
pub const ALL: [&str; 15] = [
    NVENC_FALLBACKS,
    ENCODE_FRAMES,
    ENCODES,
    ENCODE_FPS,
    UTILIZATION,
    ENCODER_UTILIZATION,
    MEMORY_USED,
    MEMORY_TOTAL,
    ENCODER_SESSIONS,
    NVENC_SESSIONS_MAX,
    NVENC_SESSIONS_IN_USE,
    STORAGE_REQUESTS,
    STORAGE_SECONDS,
    STORAGE_BYTES,
    STORAGE_OUTAGE_RETRIES,
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_is_in_the_operations_guide() -> Result<(), String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md");
        let doc = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        for name in super::ALL {
            if !doc.contains(&format!("| `{name}` |")) {
                return Err(format!("{name} has no row in docs/operations.md"));
            }
        }
        Ok(())
    }
}
