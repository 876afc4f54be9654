//! Media in object storage: `s3://bucket/key` inputs and outputs on any
//! S3-compatible server (AWS S3, GCS through its S3 interoperability, R2,
//! MinIO, Ceph, SeaweedFS), through the `object_store` crate.
//!
//! What a job may touch is the operator's choice, never the job's: the
//! buckets (optionally `bucket/prefix`) in [`ObjectStorage::buckets`], the
//! endpoint and region of the worker, and credentials from the standard AWS
//! chain (environment, web identity for EKS IRSA, container credentials for
//! EKS Pod Identity, instance metadata). A job naming anything else is
//! refused before any request.
//!
//! - Inputs are downloaded to the scratch directory ([`download`]) with
//!   bounded memory, checked against the size limit and the scratch
//!   directory's free space before and while downloading, and removed when
//!   the encode ends, whatever the outcome.
//! - Outputs are encoded into a scratch directory and uploaded once complete
//!   ([`upload`]): each HLS segment as soon as FFmpeg has finished it, while
//!   the encode runs ([`SegmentUploads`]); then the rest of the segments,
//!   the rendition playlists, and the master playlist last, so a reader
//!   never sees a playlist naming a missing object. Files over the part
//!   size ([`MULTIPART_THRESHOLD`] by default) go up in parts.
//! - Each object carries its owner (`x-amz-meta-spool-owner`, a hash of the
//!   queue, job id and enqueue time: [`OutputOwner`]) and its
//!   attempt's stamp. Every write is conditional (`If-None-Match: *` for a
//!   new key, `If-Match` on the ETag last seen for one of this job's), so
//!   two jobs never interleave in one output, and a retried job replaces
//!   its own objects and nothing else. A failed or cancelled upload removes
//!   its job's objects (master playlist first), never another job's or a
//!   later attempt's, and aborts its multipart upload.
//! - Every request has a deadline (the I/O timeout, plus time for the bytes
//!   it moves) and the cleanup after a failure has its own budget, so no
//!   storage call can hold a job, or the process's shutdown, forever.
//!
//! docs/storage.md has the operator's side: credentials per cloud, bucket
//! policy, lifecycle rules.

mod download;
pub mod error;
pub mod metrics;
mod owner;
pub mod scratch;
mod upload;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, RetryConfig};
use tokio_util::sync::CancellationToken;

pub use download::free_bytes;
pub use error::StorageError;
pub use owner::{OutputOwner, Writer};
pub use spool_encode_spec::S3Uri;
pub use upload::{Known, SegmentUploads, Session, StoredObject, Uploaded};

/// Files larger than this are uploaded in parts of this size, unless
/// [`ObjectStorage::part_size`] says otherwise.
pub const MULTIPART_THRESHOLD: usize = 16 << 20;
/// The smallest part S3 accepts (all but the last part of an upload).
pub const MIN_PART_SIZE: usize = 5 << 20;
/// The largest part S3 accepts.
pub const MAX_PART_SIZE: usize = 5 << 30;
/// Parts of one multipart upload in flight at once.
const PART_CONCURRENCY: usize = 4;
/// Object metadata key naming the owner that wrote an object
/// (`x-amz-meta-spool-owner`): [`OutputOwner::key`], a hash.
pub const OWNER_METADATA: &str = "spool-owner";
/// Object metadata key holding the writing attempt's stamp
/// (`x-amz-meta-spool-attempt`, ms since the epoch).
pub const STAMP_METADATA: &str = "spool-attempt";
/// What spool before 0.8 wrote instead: the bare job id. Such objects are
/// treated as another job's.
pub const LEGACY_OWNER_METADATA: &str = "spool-job";
/// Retries of one request inside `object_store` before the job fails
/// (retryably): the queue's own retry, with its backoff, takes over after.
const REQUEST_RETRIES: usize = 3;
/// The I/O timeout when the operator sets none.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Throughput assumed when bounding a transfer's time: a request (or a
/// whole download) moving slower than this, after the I/O timeout, fails.
pub const SLOWEST_BYTES_PER_S: u64 = 1 << 20;
/// Longest error text kept from the server, so a job's `last_error` stays
/// readable.
const MAX_REASON: usize = 400;

/// Where jobs may read and write objects; empty `buckets` turns object
/// storage off.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ObjectStorage {
    /// The buckets (each optionally narrowed to a key prefix) jobs may use.
    pub buckets: Vec<BucketScope>,
    /// An S3-compatible endpoint (`https://minio.example:9000`); `None` for
    /// AWS itself. Addressing is path-style when set.
    pub endpoint: Option<String>,
    /// The region (`us-east-1` when unset and not in `AWS_REGION`).
    pub region: Option<String>,
    /// Timeout for connecting and for each read or write to stall; `None` is
    /// [`DEFAULT_IO_TIMEOUT`].
    pub io_timeout: Option<Duration>,
    /// Fixed credentials instead of the AWS chain, for an embedding program
    /// that holds its own (`spool-encoder-worker` always uses the chain).
    pub credentials: Option<StaticCredentials>,
    /// Files larger than this go up as multipart uploads in parts of this
    /// size; `None` is [`MULTIPART_THRESHOLD`]. Clamped to
    /// [`MIN_PART_SIZE`]..=[`MAX_PART_SIZE`].
    pub part_size: Option<usize>,
    /// How long an outage is waited out inside one attempt; `None` is
    /// [`OUTAGE_BUDGET`], zero fails at the first unavailable answer.
    pub outage_budget: Option<Duration>,
}

/// An access key and its secret. `Debug` shows neither.
#[derive(Clone)]
pub struct StaticCredentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticCredentials(***)")
    }
}

impl ObjectStorage {
    /// This value with `buckets` set to `v`.
    pub fn with_buckets(mut self, v: Vec<BucketScope>) -> Self {
        self.buckets = v;
        self
    }

    /// This value with `endpoint` set to `v`.
    pub fn with_endpoint(mut self, v: Option<String>) -> Self {
        self.endpoint = v;
        self
    }

    /// This value with `region` set to `v`.
    pub fn with_region(mut self, v: Option<String>) -> Self {
        self.region = v;
        self
    }

    /// This value with `io_timeout` set to `v`.
    pub fn with_io_timeout(mut self, v: Option<Duration>) -> Self {
        self.io_timeout = v;
        self
    }

    /// This value with fixed credentials instead of the AWS chain.
    pub fn with_credentials(mut self, access_key_id: &str, secret_access_key: &str) -> Self {
        self.credentials = Some(StaticCredentials {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret_access_key.to_owned(),
        });
        self
    }

    /// This value with `part_size` set to `v`.
    pub fn with_part_size(mut self, v: Option<usize>) -> Self {
        self.part_size = v;
        self
    }

    /// This value with `outage_budget` set to `v`.
    pub fn with_outage_budget(mut self, v: Option<Duration>) -> Self {
        self.outage_budget = v;
        self
    }

    /// Whether any bucket is allowed.
    pub fn enabled(&self) -> bool {
        !self.buckets.is_empty()
    }

    fn io_timeout(&self) -> Duration {
        self.io_timeout.unwrap_or(DEFAULT_IO_TIMEOUT)
    }
}

/// One allowed bucket, optionally narrowed to keys under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketScope {
    /// The bucket.
    pub bucket: String,
    /// Keys must start with this (empty: any key); always ends with `/`
    /// when not empty, so `media/in` never admits `media/input-secret`.
    pub prefix: String,
}

impl BucketScope {
    /// Whether `uri` is inside this scope.
    pub fn admits(&self, uri: &S3Uri) -> bool {
        uri.bucket == self.bucket && uri.key.starts_with(&self.prefix)
    }
}

/// Parses `SPOOL_S3_BUCKETS`: comma-separated `bucket` or `bucket/prefix`.
pub fn parse_buckets(s: &str) -> Result<Vec<BucketScope>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (bucket, prefix) = part.split_once('/').unwrap_or((part, ""));
        let prefix = prefix.trim_end_matches('/');
        // The URI parser holds the bucket and key rules.
        let probe = format!(
            "s3://{bucket}/{}",
            if prefix.is_empty() { "k" } else { prefix }
        );
        S3Uri::parse(&probe).map_err(|e| format!("{part:?} {e}"))?;
        out.push(BucketScope {
            bucket: bucket.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        });
    }
    Ok(out)
}

/// Clients for the allowed buckets: every transfer an encode job makes
/// (allowlist, size and space checks, multipart, ownership, cleanup), for
/// the encoder and for tools that move media without encoding it. Cheap to
/// clone; its methods run on the caller's tokio runtime.
#[derive(Clone)]
pub struct Storage {
    scopes: Vec<BucketScope>,
    by_bucket: HashMap<String, Arc<AmazonS3>>,
    io_timeout: Duration,
    /// Values that must never appear in a message (the credentials).
    secrets: Vec<String>,
    part_size: usize,
    outage_budget: Duration,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// Builds a client per allowed bucket. Makes no request: credentials
    /// are fetched (and refreshed) on first use.
    pub fn new(cfg: &ObjectStorage) -> Result<Storage, StorageError> {
        let io = cfg.io_timeout();
        let mut by_bucket = HashMap::new();
        for scope in &cfg.buckets {
            if by_bucket.contains_key(&scope.bucket) {
                continue;
            }
            // Overall request time is not bounded here (a 50 GiB download
            // takes minutes); stalls are, by `io` around every read and write.
            let client = ClientOptions::new()
                .with_connect_timeout(io)
                .with_timeout_disabled()
                .with_allow_http(
                    cfg.endpoint
                        .as_deref()
                        .is_some_and(|e| e.starts_with("http://")),
                );
            let retry = RetryConfig {
                max_retries: REQUEST_RETRIES,
                retry_timeout: io,
                ..RetryConfig::default()
            };
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(&scope.bucket)
                .with_client_options(client)
                .with_retry(retry)
                .with_disable_tagging(true);
            if let Some(region) = &cfg.region {
                b = b.with_region(region);
            }
            if let Some(c) = &cfg.credentials {
                b = b
                    .with_access_key_id(&c.access_key_id)
                    .with_secret_access_key(&c.secret_access_key);
            }
            if let Some(endpoint) = &cfg.endpoint {
                b = b
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false);
            }
            let store = b.build().map_err(|e| {
                StorageError::Local(format!("cannot set up bucket {}: {e}", scope.bucket))
            })?;
            by_bucket.insert(scope.bucket.clone(), Arc::new(store));
        }
        let mut secrets: Vec<String> = [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .collect();
        if let Some(c) = &cfg.credentials {
            secrets.extend([c.access_key_id.clone(), c.secret_access_key.clone()]);
        }
        secrets.retain(|v| v.len() >= 4);
        Ok(Storage {
            scopes: cfg.buckets.clone(),
            by_bucket,
            io_timeout: io,
            secrets,
            part_size: cfg
                .part_size
                .unwrap_or(MULTIPART_THRESHOLD)
                .clamp(MIN_PART_SIZE, MAX_PART_SIZE),
            outage_budget: cfg.outage_budget.unwrap_or(OUTAGE_BUDGET),
        })
    }

    /// `Ok` when `uri`'s bucket and prefix are allowed here.
    pub fn check_allowed(&self, uri: &S3Uri) -> Result<(), StorageError> {
        self.store(uri).map(drop)
    }

    /// Uploads every file under `dir` beside `base`'s last segment (so
    /// `dir/a.mp4` goes to `<base's parent prefix>a.mp4`), tagged with
    /// `owner`, in the order encode jobs use, telling `progress` the bytes
    /// sent and the bytes in all as it goes.
    pub async fn upload_dir(
        &self,
        dir: &std::path::Path,
        base: &S3Uri,
        owner: Option<&OutputOwner>,
        progress: &mut (dyn FnMut(u64, u64) + Send),
        cancel: &CancellationToken,
    ) -> Result<Vec<StoredObject>, StorageError> {
        let session = self.session(base, owner, &[], HashMap::new())?;
        session
            .upload(dir, progress, cancel)
            .await
            .map(|u| u.objects)
    }

    /// The client for `uri`, when its bucket and prefix are allowed.
    pub(crate) fn store(&self, uri: &S3Uri) -> Result<Arc<AmazonS3>, StorageError> {
        let allowed = self.scopes.iter().any(|s| s.admits(uri));
        match self.by_bucket.get(&uri.bucket) {
            Some(store) if allowed => Ok(store.clone()),
            _ => Err(StorageError::Refused {
                uri: uri.to_string(),
                reason: "the bucket (or key prefix) is not in this worker's SPOOL_S3_BUCKETS"
                    .into(),
            }),
        }
    }

    pub(crate) fn io_timeout(&self) -> Duration {
        self.io_timeout
    }

    pub(crate) fn part_size(&self) -> usize {
        self.part_size
    }

    pub(crate) fn outage_budget(&self) -> Duration {
        self.outage_budget
    }
}

/// Passes a transfer's progress (bytes done, bytes in all) to the caller's
/// callback, at most four times a second.
pub(crate) struct Reporter<'a> {
    to: &'a mut (dyn FnMut(u64, u64) + Send),
    last: Option<std::time::Instant>,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(to: &'a mut (dyn FnMut(u64, u64) + Send)) -> Self {
        Reporter { to, last: None }
    }

    /// Reports `done` of `total` bytes (always when `force`).
    pub(crate) fn report(&mut self, done: u64, total: u64, force: bool) {
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(250));
        if due || force {
            self.last = Some(std::time::Instant::now());
            (self.to)(done, total);
        }
    }
}

/// `msg` with the known `secrets` and anything shaped like a credential
/// replaced by `***`: credentials from web identity (IRSA), Pod Identity or
/// instance metadata are fetched at run time and never in `secrets`, so
/// AWS access key ids (`AKIA…`, `ASIA…`), signed-URL and SigV4 parameters,
/// and long mixed-case base64 runs (session tokens, signatures) are hidden
/// by shape.
pub(crate) fn redact(msg: &str, secrets: &[String]) -> String {
    let mut m = msg.to_owned();
    for s in secrets {
        m = m.replace(s.as_str(), "***");
    }
    let mut m = scrub_credential_shapes(&m);
    if m.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push('…');
    }
    m
}

/// How long a transfer of `bytes` may take in all: the I/O timeout plus
/// the bytes at [`SLOWEST_BYTES_PER_S`].
pub(crate) fn transfer_budget(io: Duration, bytes: u64) -> Duration {
    io + Duration::from_secs(bytes / SLOWEST_BYTES_PER_S)
}

/// See [`redact`]: hides tokens that look like credentials.
fn scrub_credential_shapes(msg: &str) -> String {
    const KEY_PREFIXES: [&str; 6] = ["AKIA", "ASIA", "AROA", "AIDA", "ANPA", "ABIA"];
    const PARAMS: [&str; 6] = [
        "x-amz-security-token=",
        "x-amz-credential=",
        "x-amz-signature=",
        "signature=",
        "credential=",
        "token=",
    ];
    let is_b64 =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '%' | '-' | '_');
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(c) = rest.chars().next() {
        if !is_b64(c) {
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let end = rest.find(|c: char| !is_b64(c)).unwrap_or(rest.len());
        let word = &rest[..end];
        let lower = word.to_ascii_lowercase();
        let key_id = KEY_PREFIXES.iter().any(|p| word.starts_with(p))
            && word.len() >= 16
            && word[..20.min(word.len())]
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if let Some(p) = PARAMS.iter().find(|p| lower.starts_with(*p)) {
            out.push_str(&word[..p.len()]);
            out.push_str("***");
        } else if key_id
            || (word.len() >= 40
                && word.chars().any(|c| c.is_ascii_uppercase())
                && word.chars().any(|c| c.is_ascii_lowercase())
                && word.chars().any(|c| c.is_ascii_digit()))
        {
            out.push_str("***");
        } else {
            out.push_str(word);
        }
        rest = &rest[end..];
    }
    out
}

/// How long a storage outage is waited out inside one attempt (an S3
/// restart, a brief network partition) before the job fails retryably: the
/// queue's own backoff is tuned for encodes, and a 24 s restart would
/// otherwise use up every attempt of the jobs it hits.
pub const OUTAGE_BUDGET: Duration = Duration::from_secs(60);
/// The longest pause between two tries during an outage.
const OUTAGE_MAX_PAUSE: Duration = Duration::from_secs(8);

/// An outage being waited out: after each try that failed with
/// [`StorageError::Unavailable`], [`Outage::pause`] waits 1, 2, 4, 8,
/// 8, ... s and says to try again, until the outage has lasted
/// its budget ([`OUTAGE_BUDGET`] by default) or the job is cancelled.
pub(crate) struct Outage {
    budget: Duration,
    started: Option<std::time::Instant>,
    pause: Duration,
}

impl Outage {
    /// An outage to wait out for at most `budget`.
    pub(crate) fn new(budget: Duration) -> Outage {
        Outage {
            budget,
            started: None,
            pause: Duration::from_secs(1),
        }
    }

    /// `Ok(())` once it is time to try again after `e`; `Err` with the
    /// error to report when not.
    pub(crate) async fn pause(
        &mut self,
        e: StorageError,
        cancel: &CancellationToken,
        uri: &S3Uri,
    ) -> Result<(), StorageError> {
        let StorageError::Unavailable { reason, .. } = &e else {
            return Err(e);
        };
        let started = *self.started.get_or_insert_with(std::time::Instant::now);
        if started.elapsed() + self.pause >= self.budget || cancel.is_cancelled() {
            return Err(e);
        }
        ::metrics::counter!(crate::metrics::STORAGE_OUTAGE_RETRIES).increment(1);
        tracing::warn!(object = %uri, %reason, pause_s = self.pause.as_secs(), "object storage unavailable; trying again");
        tokio::select! {
            _ = cancel.cancelled() => return Err(StorageError::Cancelled),
            _ = tokio::time::sleep(self.pause) => {}
        }
        self.pause = (self.pause * 2).min(OUTAGE_MAX_PAUSE);
        Ok(())
    }
}

/// A request that made no progress for `io`.
pub(crate) fn stalled(uri: &S3Uri, io: Duration) -> StorageError {
    StorageError::Unavailable {
        uri: uri.to_string(),
        reason: format!("no answer within {io:?}"),
    }
}

/// Runs one storage request (`op`: `get`, `put`, `head`, ...) within
/// `limit`, recording it in the storage metrics: requests by outcome and
/// their latency. A request past its limit is dropped and is an error.
pub(crate) async fn timed<T: Outcome>(
    op: &'static str,
    limit: Duration,
    uri: &S3Uri,
    fut: impl Future<Output = T>,
) -> Result<T, StorageError> {
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(limit, fut).await;
    let outcome = match &r {
        Err(_) => "timeout",
        Ok(v) if v.failed() => "error",
        Ok(_) => "ok",
    };
    ::metrics::counter!(crate::metrics::STORAGE_REQUESTS, "op" => op, "outcome" => outcome)
        .increment(1);
    ::metrics::histogram!(crate::metrics::STORAGE_SECONDS, "op" => op)
        .record(started.elapsed().as_secs_f64());
    r.map_err(|_| stalled(uri, limit))
}

/// Whether a request's answer is a failure, for the metrics.
pub(crate) trait Outcome {
    /// `true` for an error answer.
    fn failed(&self) -> bool;
}

impl<T> Outcome for object_store::Result<T> {
    fn failed(&self) -> bool {
        match self {
            Ok(_) => false,
            // Absent objects and lost conditions are answers, not failures.
            Err(
                object_store::Error::NotFound { .. }
                | object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => false,
            Err(_) => true,
        }
    }
}

impl<T> Outcome for Option<object_store::Result<T>> {
    fn failed(&self) -> bool {
        self.as_ref().is_some_and(|r| r.failed())
    }
}

/// Counts bytes moved (`op`: `get` or `put`).
pub(crate) fn count_bytes(op: &'static str, n: u64) {
    ::metrics::counter!(crate::metrics::STORAGE_BYTES, "op" => op).increment(n);
}

/// The key as an `object_store` path (the spec crate has checked its shape).
pub(crate) fn object_path(uri: &S3Uri) -> Result<ObjectPath, StorageError> {
    ObjectPath::parse(&uri.key).map_err(|e| StorageError::Refused {
        uri: uri.to_string(),
        reason: format!("the key is not usable: {e}"),
    })
}

/// Sorts an `object_store` error into permanent (the object is missing, the
/// credentials or policy refuse it) or retryable (timeouts, 5xx, resets).
pub(crate) fn classify(uri: &S3Uri, e: &object_store::Error, secrets: &[String]) -> StorageError {
    use object_store::Error as E;
    let text = redact(&e.to_string(), secrets);
    let refused = |reason: String| StorageError::Refused {
        uri: uri.to_string(),
        reason,
    };
    match e {
        E::NotFound { .. } => refused("no such object".into()),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => refused(format!(
            "access denied (check the worker's credentials and the bucket policy): {text}"
        )),
        _ if [
            "NoSuchBucket",
            "InvalidBucketName",
            "AccessDenied",
            "InvalidAccessKeyId",
            "KeyTooLongError",
            "MetadataTooLarge",
            "EntityTooLarge",
        ]
        .iter()
        .any(|c| text.contains(c)) =>
        {
            refused(text)
        }
        // A request the store calls malformed fails the same way every
        // time (a key too long, a bad argument): retrying re-runs the whole
        // encode for nothing. S3's 400s that are about the moment (a slow
        // socket, a credential that just expired) are the exception.
        _ if ["status code: 400", "status code: 411", "status code: 413"]
            .iter()
            .any(|c| text.contains(c))
            && !["RequestTimeout", "ExpiredToken", "TokenRefreshRequired"]
                .iter()
                .any(|c| text.contains(c)) =>
        {
            refused(format!(
                "the store refused the request as malformed: {text}"
            ))
        }
        _ => StorageError::Unavailable {
            uri: uri.to_string(),
            reason: text,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_scopes_parse_and_admit_only_their_prefix() -> Result<(), String> {
        let s = parse_buckets(" media-in , media-out/renders/ ,")?;
        assert_eq!(s.len(), 2);
        let uri = |u: &str| S3Uri::parse(u);
        assert!(s[0].admits(&uri("s3://media-in/any/key")?));
        assert!(s[1].admits(&uri("s3://media-out/renders/a.mp4")?));
        assert!(!s[1].admits(&uri("s3://media-out/renders-secret/a.mp4")?));
        assert!(!s[1].admits(&uri("s3://media-out/a.mp4")?));
        assert!(!s[0].admits(&uri("s3://other/a")?));
        for bad in ["UPPER", "b", "media/../x", "media//x"] {
            assert!(parse_buckets(bad).is_err(), "{bad}");
        }
        assert!(parse_buckets("")?.is_empty());
        Ok(())
    }

    #[test]
    fn credentials_are_redacted_and_messages_bounded() {
        let secrets = vec!["AKIASECRETKEY".to_owned()];
        let m = redact(
            "403: <AWSAccessKeyId>AKIASECRETKEY</AWSAccessKeyId>",
            &secrets,
        );
        assert!(!m.contains("AKIASECRETKEY") && m.contains("***"), "{m}");
        assert!(redact(&"é".repeat(1000), &[]).len() <= MAX_REASON + 4);
        // Credentials the process never held as settings (IRSA, IMDS).
        let token = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD";
        let m = redact(
            &format!(
                "403 for ASIAY34FZKBOKMUTVV7A: <Token>{token}</Token> ?X-Amz-Security-Token=abc&X-Amz-Credential=ASIA%2F"
            ),
            &[],
        );
        for leaked in ["ASIAY34FZKBOKMUTVV7A", token, "abc&", "ASIA%2F"] {
            assert!(!m.contains(leaked), "{leaked} in {m}");
        }
        // Keys, buckets and ordinary words stay readable.
        for plain in [
            "no such key out/film_720p.mp4 in bucket media-out (status 404)",
            "s3://media-out/renders/2026/customer-videos/very-long-name-of-a-film_720p/seg_00001.ts",
        ] {
            assert_eq!(redact(plain, &[]), plain);
        }
    }
}
