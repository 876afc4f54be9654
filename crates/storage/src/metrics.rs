//! The metrics object storage records (`docs/operations.md` lists them
//! with the rest).

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
