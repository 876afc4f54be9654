//! Every metric the encoder and its worker export, named in one place
//! (`docs/operations.md` lists them with the runtime's `spool_*` metrics).

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

/// Object storage requests (`op`: `get`, `head`, `list`, `put`,
/// `put_part`, `create_multipart`, `complete_multipart`, `abort_multipart`,
/// `delete`; `outcome`: `ok`, `error`, `timeout`). Retries inside one
/// request are not counted apart.
pub const STORAGE_REQUESTS: &str = "spool_storage_requests_total";
/// Object storage request latency, seconds (`op`).
pub const STORAGE_SECONDS: &str = "spool_storage_request_seconds";
/// Bytes moved to and from object storage (`op`: `get`, `put`).
pub const STORAGE_BYTES: &str = "spool_storage_bytes_total";
/// Tries of a storage request or download repeated while object storage
/// was unavailable, within one attempt's outage budget.
pub const STORAGE_OUTAGE_RETRIES: &str = "spool_storage_outage_retries_total";
