//! Outputs: the files of a finished encode uploaded in an order that never
//! shows a reader a playlist naming a missing object, each object tagged with
//! its job, and everything this attempt wrote removed again if it fails.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, ObjectStore, PutMode, PutMultipartOptions,
    PutOptions, PutPayload, UpdateVersion,
};
use spool_encode_spec::S3Uri;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;

use super::{
    LEGACY_OWNER_METADATA, OWNER_METADATA, PART_CONCURRENCY, STAMP_METADATA, Storage, classify,
    object_path,
};
use crate::error::StorageError;
use crate::owner::{OutputOwner, Writer};

/// One object an encode wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredObject {
    /// `s3://bucket/key`.
    pub uri: String,
    /// Bytes.
    pub size_bytes: u64,
    /// The ETag the server answered with.
    pub etag: Option<String>,
    /// The `Content-Type` it was stored with.
    pub content_type: &'static str,
}

/// What an upload wrote, in upload order.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Uploaded {
    /// Every object of the outputs, in the order they went up.
    pub objects: Vec<StoredObject>,
}

/// Objects under an encode's outputs that earlier attempts of the same job
/// wrote (key → the ETag last seen), which this attempt may replace.
pub type Known = HashMap<String, Option<String>>;

/// The `Content-Type` for an output file.
pub(crate) fn content_type(name: &str) -> &'static str {
    match name
        .rsplit('.')
        .next()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("mp4") => "video/mp4",
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("ts") => "video/mp2t",
        Some("m4s") => "video/iso.segment",
        _ => "application/octet-stream",
    }
}

/// Upload order: media first, rendition playlists next, the master playlist
/// last (see the module docs).
fn rank(rel: &str) -> u8 {
    if !rel.ends_with(".m3u8") {
        0
    } else if rel.ends_with("/master.m3u8") {
        2
    } else {
        1
    }
}

/// What is stored at a key: its ETag and who wrote it.
#[derive(Debug, Clone)]
struct Found {
    etag: Option<String>,
    writer: Writer,
}

/// Who wrote the object at `path`, from its metadata; `None` when there is
/// no object.
async fn head(
    store: &AmazonS3,
    path: &ObjectPath,
    me: Option<&OutputOwner>,
) -> object_store::Result<Option<Found>> {
    let got = store
        .get_opts(
            path,
            GetOptions {
                head: true,
                ..GetOptions::default()
            },
        )
        .await;
    let head = match got {
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        other => other?,
    };
    let meta = |k: &str| {
        head.attributes
            .get(&Attribute::Metadata(k.to_owned().into()))
            .map(|v| v.as_ref().to_owned())
    };
    let writer = match (meta(OWNER_METADATA), meta(LEGACY_OWNER_METADATA)) {
        (Some(key), _) => Writer::of(Some(&key), meta(STAMP_METADATA).as_deref(), me),
        // Written by an earlier spool, whose owners were bare job ids.
        (None, Some(id)) => Writer::Other(format!("legacy:{id}")),
        (None, None) => Writer::Unknown,
    };
    Ok(Some(Found {
        etag: head.meta.e_tag,
        writer,
    }))
}

/// [`head`] bounded by `io`, its errors sorted.
async fn head_within(
    store: &AmazonS3,
    uri: &S3Uri,
    path: &ObjectPath,
    me: Option<&OutputOwner>,
    io: Duration,
    secrets: &[String],
) -> Result<Option<Found>, StorageError> {
    let r = super::timed("head", io, uri, head(store, path, me)).await?;
    r.map_err(|e| classify(uri, &e, secrets))
}

/// Every key under `dir` (a `/`-ended prefix), each page bounded by `io`.
async fn list_within(
    store: &AmazonS3,
    dir: &S3Uri,
    io: Duration,
    secrets: &[String],
) -> Result<Vec<ObjectPath>, StorageError> {
    let path = object_path(dir)?;
    let mut list = store.list(Some(&path));
    let mut found = Vec::new();
    while let Some(meta) = super::timed("list", io, dir, list.next()).await? {
        found.push(meta.map_err(|e| classify(dir, &e, secrets))?.location);
    }
    Ok(found)
}

impl Storage {
    /// Deletes every object under `dir` (treated as a `/`-ended prefix),
    /// each request bounded by the I/O timeout; returns how many went. For
    /// spool's own working prefixes (a chunked encode's chunks), never for
    /// outputs, which carry owners.
    pub async fn remove_prefix(&self, dir: &S3Uri) -> Result<usize, StorageError> {
        let store = self.store(dir)?;
        let io = self.io_timeout();
        let prefix = S3Uri {
            bucket: dir.bucket.clone(),
            key: format!("{}/", dir.key.trim_end_matches('/')),
        };
        let keys = list_within(&store, &prefix, io, &self.secrets).await?;
        for k in &keys {
            let uri = S3Uri {
                bucket: dir.bucket.clone(),
                key: k.to_string(),
            };
            match super::timed("delete", io, &uri, store.delete(k)).await? {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(classify(&uri, &e, &self.secrets)),
            }
        }
        Ok(keys.len())
    }
}

/// Refuses an encode whose outputs would replace objects that are not its
/// own: `names` are the output files (or, `true`, HLS directories) beside
/// `base`'s last segment. Runs before any work. Returns the objects under
/// them that earlier attempts of the same job wrote (key → ETag), which
/// this attempt may replace.
impl Storage {
    /// Refuses an encode whose outputs would replace objects that are not
    /// its own: `names` are the output files (or, `true`, HLS directories)
    /// beside `base`'s last segment. Runs before any work. Returns the
    /// objects under them that earlier attempts of the same job wrote,
    /// which this attempt may replace.
    pub async fn check_owner(
        &self,
        base: &S3Uri,
        names: &[(String, bool)],
        owner: Option<&OutputOwner>,
        cancel: &CancellationToken,
    ) -> Result<Known, StorageError> {
        let stores = self;
        let store = stores.store(base)?;
        let secrets = &stores.secrets;
        let io = stores.io_timeout();
        let targets: Vec<(S3Uri, bool)> = names
            .iter()
            .map(|(name, dir)| {
                (
                    S3Uri {
                        bucket: base.bucket.clone(),
                        key: format!("{}{name}", base.parent_prefix()),
                    },
                    *dir,
                )
            })
            .collect();
        let check = async {
            let mut own = HashMap::new();
            for (uri, dir) in targets {
                let existing: Vec<ObjectPath> = if dir {
                    let prefix = S3Uri {
                        bucket: uri.bucket.clone(),
                        key: format!("{}/", uri.key),
                    };
                    list_within(&store, &prefix, io, secrets).await?
                } else {
                    vec![object_path(&uri)?]
                };
                for p in existing {
                    let at = S3Uri {
                        bucket: uri.bucket.clone(),
                        key: p.to_string(),
                    };
                    let Some(found) = head_within(&store, &at, &p, owner, io, secrets).await?
                    else {
                        continue;
                    };
                    match owner {
                        Some(me) if found.writer.replaceable_by(me) => {
                            own.insert(p.to_string(), found.etag);
                        }
                        _ => {
                            return Err(StorageError::OutputExists {
                                path: at.to_string(),
                                reason: found.writer.refusal(),
                            });
                        }
                    }
                }
            }
            Ok(own)
        };
        tokio::select! {
            _ = cancel.cancelled() => Err(StorageError::Cancelled),
            r = check => r,
        }
    }

    /// A session writing the outputs `outputs` (HLS directories `true`),
    /// named relative to `base`'s parent prefix, for `owner`; `known` is
    /// what [`Storage::check_owner`] found of this job's.
    pub fn session(
        &self,
        base: &S3Uri,
        owner: Option<&OutputOwner>,
        outputs: &[(String, bool)],
        known: Known,
    ) -> Result<Session, StorageError> {
        Ok(Session {
            store: self.store(base)?,
            bucket: base.bucket.clone(),
            prefix: base.parent_prefix().to_owned(),
            owner: owner.cloned(),
            secrets: self.secrets.clone(),
            io: self.io_timeout(),
            part_size: self.part_size(),
            outage: self.outage_budget(),
            known,
            written: Vec::new(),
            outputs: outputs.to_vec(),
            early: HashMap::new(),
            early_from: None,
        })
    }
}

/// What one attempt has written so far, shared by the uploads made while the
/// encode runs (finished HLS segments) and the final upload, so a failure
/// removes all of it and the final upload skips what is already up. Made
/// by [`Storage::session`].
pub struct Session {
    store: Arc<AmazonS3>,
    bucket: String,
    /// The key prefix the output names are relative to.
    prefix: String,
    owner: Option<OutputOwner>,
    secrets: Vec<String>,
    io: Duration,
    part_size: usize,
    /// How long an outage is waited out.
    outage: Duration,
    /// Keys this job's attempts are known to hold, with the ETag last seen:
    /// the next write of each is conditional on it (`If-Match`); any other
    /// key is written only if absent (`If-None-Match: *`).
    known: HashMap<String, Option<String>>,
    /// Every object a request was sent for, in order (a failed or cancelled
    /// request may still have created its object), with the ETag it
    /// answered when it succeeded.
    written: Vec<(S3Uri, ObjectPath, Option<String>)>,
    /// The output names (HLS directories `true`), relative to `prefix`.
    outputs: Vec<(String, bool)>,
    /// Files uploaded while the encode ran, by output-relative name, with
    /// the staging directory they were read from.
    early: HashMap<String, StoredObject>,
    early_from: Option<String>,
}

/// How a conditional write ended.
enum Put {
    Done(Option<String>),
    /// The object is not in the state the condition named.
    Conflict,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("written", &self.written.len())
            .finish_non_exhaustive()
    }
}

impl Session {
    fn uri(&self, rel: &str) -> S3Uri {
        S3Uri {
            bucket: self.bucket.clone(),
            key: format!("{}{rel}", self.prefix),
        }
    }

    /// Uploads the open file `file` (`size` bytes) as `rel`, never over
    /// another job's object or a later attempt's; `sent` hears the bytes
    /// sent so far of a multipart upload.
    async fn put(
        &mut self,
        rel: &str,
        mut file: tokio::fs::File,
        size: u64,
        sent: &mut (dyn FnMut(u64) + Send),
        cancel: &CancellationToken,
    ) -> Result<StoredObject, StorageError> {
        let uri = self.uri(rel);
        let path = object_path(&uri)?;
        let ct = content_type(rel);
        // Recorded before the request: a failed or cancelled one may still
        // have created the object.
        self.written.push((uri.clone(), path.clone(), None));
        let slot = self.written.len() - 1;
        for _ in 0..4 {
            let expect = self.known.get(&uri.key).cloned();
            // A storage outage is waited out within its budget.
            let mut outage = super::Outage::new(self.outage);
            let put = loop {
                let attrs = attributes(ct, self.owner.as_ref());
                let once = put_file(
                    self,
                    &uri,
                    &path,
                    &mut file,
                    size,
                    attrs,
                    expect.clone(),
                    sent,
                    cancel,
                );
                match once.await {
                    Ok(p) => break p,
                    Err(e) => outage.pause(e, cancel, &uri).await?,
                }
            };
            match put {
                Put::Done(etag) => {
                    self.known.insert(uri.key.clone(), etag.clone());
                    self.written[slot].2 = etag.clone();
                    return Ok(StoredObject {
                        uri: uri.to_string(),
                        size_bytes: size,
                        etag,
                        content_type: ct,
                    });
                }
                Put::Conflict => {
                    let found = head_within(
                        &self.store,
                        &uri,
                        &path,
                        self.owner.as_ref(),
                        self.io,
                        &self.secrets,
                    )
                    .await?;
                    match (found, &self.owner) {
                        (None, _) => {
                            self.known.remove(&uri.key);
                        }
                        (Some(f), Some(me)) if f.writer.replaceable_by(me) => {
                            self.known.insert(uri.key.clone(), f.etag);
                        }
                        (Some(f), _) => {
                            return Err(StorageError::OutputExists {
                                path: uri.to_string(),
                                reason: format!(
                                    "it was written while this job ran: {}",
                                    f.writer.refusal()
                                ),
                            });
                        }
                    }
                }
            }
        }
        Err(StorageError::Unavailable {
            uri: uri.to_string(),
            reason: "the object kept changing while it was written".into(),
        })
    }

    /// Removes this job's objects after a failed or cancelled attempt, so a
    /// failed encode leaves nothing: when this attempt wrote anything,
    /// every object under its outputs that this attempt or an earlier one
    /// of its job wrote (never another job's, never a later attempt's),
    /// master playlist first, then the rendition playlists, then media, so
    /// a playlist never names a missing object. An attempt that wrote
    /// nothing leaves an earlier attempt's complete output alone. Bounded
    /// by [`cleanup_budget`] whatever the storage does (what is left then
    /// is the retry's to replace).
    pub async fn remove_written(&self) {
        if self.written.is_empty() {
            return;
        }
        let budget = cleanup_budget(self.io);
        if tokio::time::timeout(budget, self.remove_owned(&HashSet::new(), true))
            .await
            .is_err()
        {
            tracing::warn!(
                output = %self.uri(""),
                "cleanup of a failed upload ran out of time; the retry replaces what is left"
            );
        }
    }

    /// Deletes every object of this job under the outputs (see
    /// [`Session::remove_written`]) except `keep`, in three phases; with
    /// `stop_on_failure`, a playlist that cannot be removed keeps the media
    /// it may name. Deletes run in parallel within a phase.
    async fn remove_owned(&self, keep: &HashSet<String>, stop_on_failure: bool) -> bool {
        let mut keys: Vec<(S3Uri, ObjectPath)> = Vec::new();
        let mut seen = HashSet::new();
        let mut listed_all = true;
        for (name, dir) in &self.outputs {
            let uri = self.uri(name);
            if *dir {
                let prefix = S3Uri {
                    bucket: self.bucket.clone(),
                    key: format!("{}/", uri.key),
                };
                match list_within(&self.store, &prefix, self.io, &self.secrets).await {
                    Ok(found) => {
                        for p in found {
                            let u = S3Uri {
                                bucket: self.bucket.clone(),
                                key: p.to_string(),
                            };
                            if seen.insert(u.key.clone()) {
                                keys.push((u, p));
                            }
                        }
                    }
                    Err(e) => {
                        // What this attempt wrote is still known, and
                        // still removed, master playlist first.
                        tracing::warn!(output = %uri, error = %e, "cannot list an output");
                        listed_all = false;
                    }
                }
            } else if let Ok(p) = object_path(&uri)
                && seen.insert(uri.key.clone())
            {
                keys.push((uri, p));
            }
        }
        for (uri, path, _) in &self.written {
            if seen.insert(uri.key.clone()) {
                keys.push((uri.clone(), path.clone()));
            }
        }
        keys.retain(|(u, _)| !keep.contains(&u.to_string()));
        let mut all_gone = listed_all;
        for phase in [2u8, 1, 0] {
            // Futures built first: a closure inside the stream trips the
            // compiler's proof that the task is `Send`.
            let mut batch = Vec::new();
            for (u, p) in keys.iter().filter(|(u, _)| rank(&u.key) == phase) {
                batch.push(self.remove_if_ours(u, p));
            }
            let gone: Vec<bool> = futures::stream::iter(batch)
                .buffer_unordered(8)
                .collect()
                .await;
            if gone.iter().any(|g| !g) {
                all_gone = false;
                if stop_on_failure && phase > 0 {
                    return false;
                }
            }
        }
        all_gone
    }

    /// Deletes `path` if this job may remove it: an earlier or this
    /// attempt's object (for an encode without an owner, only the version
    /// this attempt wrote). `false` when it may still be there.
    async fn remove_if_ours(&self, uri: &S3Uri, path: &ObjectPath) -> bool {
        let found = match head_within(
            &self.store,
            uri,
            path,
            self.owner.as_ref(),
            self.io,
            &self.secrets,
        )
        .await
        {
            Ok(None) => return true,
            Ok(Some(f)) => f,
            Err(e) => {
                tracing::warn!(object = %uri, error = %e, "cannot check a partial output");
                return false;
            }
        };
        let ours = match &self.owner {
            Some(me) => found.writer.replaceable_by(me),
            None => {
                found.etag.is_some()
                    && self
                        .written
                        .iter()
                        .any(|(u, _, e)| u == uri && *e == found.etag)
            }
        };
        if !ours {
            return true;
        }
        match super::timed("delete", self.io, uri, self.store.delete(path)).await {
            Ok(Ok(()) | Err(object_store::Error::NotFound { .. })) => true,
            _ => {
                tracing::warn!(object = %uri, "could not remove a partial output");
                false
            }
        }
    }

    /// Uploads the HLS segments of `hls_dir` that FFmpeg has finished in
    /// the staging directory under `scratch` (see [`finished_segments`]).
    async fn upload_finished(
        &mut self,
        scratch: &Path,
        hls_dir: &str,
        cancel: &CancellationToken,
    ) -> Result<(), StorageError> {
        let Some((staging, segments)) = finished_segments(scratch, hls_dir) else {
            return Ok(());
        };
        if self.early_from.as_deref() != Some(staging.as_str()) {
            // A new attempt inside the encode (a backend fallback) writes
            // new files under the same names: its own count from here. The
            // earlier ones stay in `written`, so they are still cleaned up.
            self.early.clear();
            self.early_from = Some(staging);
        }
        for (rel, file) in segments {
            if self.early.contains_key(&rel) {
                continue;
            }
            if cancel.is_cancelled() {
                return Err(StorageError::Cancelled);
            }
            // Opened before the upload: a staging directory renamed or
            // removed meanwhile leaves the file to the final upload.
            let Ok(f) = tokio::fs::File::open(&file).await else {
                continue;
            };
            let Ok(meta) = f.metadata().await else {
                continue;
            };
            let obj = self.put(&rel, f, meta.len(), &mut |_| {}, cancel).await?;
            self.early.insert(rel, obj);
        }
        Ok(())
    }
}

/// The HLS segments under `scratch`'s one staging directory that FFmpeg has
/// finished writing, as (output-relative name, path), with the staging
/// directory's name; `None` while there is no single staging directory.
///
/// A segment is finished once a later one of its rendition exists: FFmpeg's
/// HLS muxer flushes and closes a segment before it opens the next
/// (`hls_write_packet` in libavformat/hlsenc.c: `hlsenc_io_close` on the old
/// segment, then `hls_start` for the new one). With `hls_playlist_type vod`
/// it writes the playlists only at the end, so they cannot be watched
/// instead. The last segment of each rendition goes up with the playlists.
fn finished_segments(scratch: &Path, hls_dir: &str) -> Option<(String, Vec<(String, PathBuf)>)> {
    let mut staging = std::fs::read_dir(scratch)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".spool-partial-"));
    let name = staging.next()?;
    if staging.next().is_some() {
        return None;
    }
    let mut out = Vec::new();
    for rendition in std::fs::read_dir(scratch.join(&name)).ok()?.flatten() {
        if !rendition.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let label = rendition.file_name().to_string_lossy().into_owned();
        let Ok(files) = std::fs::read_dir(rendition.path()) else {
            continue;
        };
        let mut segs: Vec<(u64, String)> = files
            .flatten()
            .filter_map(|f| {
                let n = f.file_name().to_string_lossy().into_owned();
                let i = n.strip_prefix("seg_")?.strip_suffix(".ts")?.parse().ok()?;
                Some((i, n))
            })
            .collect();
        segs.sort();
        segs.pop();
        for (_, file) in segs {
            out.push((
                format!("{hls_dir}/{label}/{file}"),
                rendition.path().join(&file),
            ));
        }
    }
    Some((name, out))
}

/// Uploads of finished HLS segments while the encode runs: a task on the
/// caller's runtime that looks at the staging directory every
/// [`SEGMENT_POLL`].
#[derive(Debug)]
pub struct SegmentUploads {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<(Session, Result<(), StorageError>)>>,
}

impl Drop for SegmentUploads {
    /// Dropped without [`SegmentUploads::finish`] (the encode's future was
    /// dropped): the task stops after the upload in flight.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// How often the staging directory is looked at for finished segments.
const SEGMENT_POLL: Duration = Duration::from_millis(200);

impl SegmentUploads {
    /// Starts watching `scratch` for finished segments of the HLS output
    /// directory `hls_dir`. An upload failure cancels `encode` (so the
    /// encode stops early) and is returned by [`SegmentUploads::finish`].
    /// Must be called within a tokio runtime.
    pub fn start(
        mut session: Session,
        scratch: &Path,
        hls_dir: &str,
        encode: CancellationToken,
        cancel: &CancellationToken,
    ) -> SegmentUploads {
        let stop = CancellationToken::new();
        let (scratch, hls_dir) = (scratch.to_path_buf(), hls_dir.to_owned());
        let (stopped, cancel) = (stop.clone(), cancel.clone());
        let task = tokio::spawn(async move {
            let r = loop {
                tokio::select! {
                    _ = stopped.cancelled() => break Ok(()),
                    _ = tokio::time::sleep(SEGMENT_POLL) => {}
                }
                if let Err(e) = session.upload_finished(&scratch, &hls_dir, &cancel).await {
                    encode.cancel();
                    break Err(e);
                }
            };
            (session, r)
        });
        SegmentUploads {
            stop,
            task: Some(task),
        }
    }

    /// Stops watching (an upload in flight completes) and returns the
    /// session with the first upload error, if any.
    pub async fn finish(mut self) -> Result<(Session, Result<(), StorageError>), StorageError> {
        self.stop.cancel();
        let task = self
            .task
            .take()
            .ok_or_else(|| StorageError::Local("the segment uploads were finished twice".into()))?;
        task.await
            .map_err(|e| StorageError::Local(format!("the segment upload task died: {e}")))
    }
}

impl Session {
    /// Uploads every file under `local` (the encode's published outputs, named
    /// as their keys are beside `base`'s last segment) that `session` has not
    /// already uploaded. Once everything is up, objects of this job under the
    /// outputs that are not among them (an earlier attempt's) are removed. On
    /// failure or cancel, this job's objects are removed again (see
    /// [`Session::remove_written`]). A cancel takes effect between objects (and
    /// between the parts of a large one): a single PUT dropped midway could
    /// still land after the cleanup's DELETE.
    pub async fn upload(
        mut self,
        local: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
        cancel: &CancellationToken,
    ) -> Result<Uploaded, StorageError> {
        let session = &mut self;
        let mut files = Vec::new();
        walk(local, local, &mut files)
            .map_err(|e| StorageError::Local(format!("listing the outputs to upload: {e}")))?;
        files.sort_by(|a, b| (rank(&a.0), &a.0).cmp(&(rank(&b.0), &b.0)));
        let early = std::mem::take(&mut session.early);
        let total: u64 = files
            .iter()
            .filter(|f| early.get(&f.0).is_none_or(|o| o.size_bytes != f.2))
            .map(|f| f.2)
            .sum();
        let mut report = super::Reporter::new(progress);
        {
            let mut objects = Vec::new();
            let mut done = 0u64;
            let run = async {
                for (rel, file, size) in &files {
                    if let Some(o) = early.get(rel).filter(|o| o.size_bytes == *size) {
                        objects.push(o.clone());
                        continue;
                    }
                    if cancel.is_cancelled() {
                        return Err(StorageError::Cancelled);
                    }
                    let f = tokio::fs::File::open(file).await.map_err(|e| {
                        StorageError::Local(format!(
                            "reading output {} to upload: {e}",
                            file.display()
                        ))
                    })?;
                    let before = done;
                    let obj = session
                        .put(
                            rel,
                            f,
                            *size,
                            &mut |n| report.report(before + n, total, false),
                            cancel,
                        )
                        .await?;
                    done += size;
                    report.report(done, total, false);
                    objects.push(obj);
                }
                if cancel.is_cancelled() {
                    return Err(StorageError::Cancelled);
                }
                // Objects of this job under the outputs that are not outputs
                // now: an earlier attempt's, or an early upload whose encode
                // attempt was replaced by a fallback.
                let ours: HashSet<String> = objects.iter().map(|o| o.uri.clone()).collect();
                let budget = cleanup_budget(session.io);
                let tidy = tokio::time::timeout(budget, session.remove_owned(&ours, false));
                if !tidy.await.unwrap_or(false) {
                    return Err(StorageError::Unavailable {
                        uri: session.uri("").to_string(),
                        reason: "could not remove an earlier attempt's objects beside the outputs"
                            .into(),
                    });
                }
                report.report(done, total, true);
                Ok(())
            };
            match run.await {
                Ok(()) => Ok(Uploaded { objects }),
                Err(e) => {
                    session.remove_written().await;
                    // A request that failed because it was cut short by the
                    // cancel reports the cancel.
                    Err(if cancel.is_cancelled() {
                        StorageError::Cancelled
                    } else {
                        e
                    })
                }
            }
        }
    }
}

/// How long the cleanup after a failed attempt may take in all: the
/// listing, then three rounds of parallel checks and deletes.
pub(crate) fn cleanup_budget(io: Duration) -> Duration {
    io.saturating_mul(4)
}

fn attributes(content_type: &'static str, owner: Option<&OutputOwner>) -> Attributes {
    let mut a = Attributes::new();
    a.insert(Attribute::ContentType, AttributeValue::from(content_type));
    if let Some(o) = owner {
        a.insert(
            Attribute::Metadata(OWNER_METADATA.into()),
            AttributeValue::from(o.key().to_owned()),
        );
        a.insert(
            Attribute::Metadata(STAMP_METADATA.into()),
            AttributeValue::from(o.stamp().to_string()),
        );
    }
    a
}

fn conflict(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
    )
}

/// Uploads one open file (from its start): a single conditional PUT
/// (`If-None-Match: *` when `expect` is `None`, else `If-Match` on its
/// ETag), or, when it is larger than a part, a multipart upload whose
/// completion is preceded by the same check (object_store offers no
/// conditional completion: see docs/storage.md for the window that leaves).
/// A multipart upload is aborted on any failure, timeout or cancel.
#[allow(clippy::too_many_arguments)]
async fn put_file(
    s: &Session,
    uri: &S3Uri,
    path: &ObjectPath,
    file: &mut tokio::fs::File,
    size: u64,
    attributes: Attributes,
    expect: Option<Option<String>>,
    sent: &mut (dyn FnMut(u64) + Send),
    cancel: &CancellationToken,
) -> Result<Put, StorageError> {
    let (io, secrets, part) = (s.io, &s.secrets[..], s.part_size);
    let read_err =
        |e: std::io::Error| StorageError::Local(format!("reading output {uri} to upload: {e}"));
    file.seek(std::io::SeekFrom::Start(0))
        .await
        .map_err(read_err)?;
    if size <= part as u64 {
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes).await.map_err(read_err)?;
        let mode = match expect {
            None => PutMode::Create,
            Some(etag) => PutMode::Update(UpdateVersion {
                e_tag: etag,
                version: None,
            }),
        };
        let opts = PutOptions {
            attributes,
            mode,
            ..PutOptions::default()
        };
        let put = super::timed(
            "put",
            super::transfer_budget(io, size),
            uri,
            s.store.put_opts(path, PutPayload::from(bytes), opts),
        )
        .await?;
        return match put {
            Ok(r) => {
                super::count_bytes("put", size);
                Ok(Put::Done(r.e_tag))
            }
            Err(e) if conflict(&e) => Ok(Put::Conflict),
            // An ETag the store does not compare (a conditional write it
            // does not support) reads as "not implemented".
            Err(e) => Err(classify(uri, &e, secrets)),
        };
    }
    let opts = PutMultipartOptions {
        attributes,
        ..PutMultipartOptions::default()
    };
    let mut upload = super::timed(
        "create_multipart",
        io,
        uri,
        s.store.put_multipart_opts(path, opts),
    )
    .await?
    .map_err(|e| classify(uri, &e, secrets))?;
    let budget = super::transfer_budget(io, part as u64);
    let outcome = {
        let sending = async {
            let mut inflight = futures::stream::FuturesUnordered::new();
            let mut total = 0u64;
            let mut buf = vec![0u8; part];
            loop {
                while inflight.len() >= PART_CONCURRENCY {
                    part_done(&mut inflight, budget, uri, secrets).await?;
                }
                // Parts but the last must be full: read until the buffer
                // is, or the file ends.
                let mut n = 0;
                while n < part {
                    let got = file.read(&mut buf[n..]).await.map_err(read_err)?;
                    if got == 0 {
                        break;
                    }
                    n += got;
                }
                if n == 0 {
                    break;
                }
                inflight.push(upload.put_part(PutPayload::from(buf[..n].to_vec())));
                total += n as u64;
                sent(total);
                if n < part {
                    break;
                }
            }
            while !inflight.is_empty() {
                part_done(&mut inflight, budget, uri, secrets).await?;
            }
            // The condition a single PUT would have carried, checked just
            // before the object appears.
            let now = head_within(&s.store, uri, path, s.owner.as_ref(), io, secrets).await?;
            let holds = match (&expect, &now) {
                (None, None) => true,
                (Some(etag), Some(f)) => etag.is_some() && f.etag == *etag,
                _ => false,
            };
            if !holds {
                return Ok(Put::Conflict);
            }
            let done = super::timed("complete_multipart", budget, uri, upload.complete())
                .await?
                .map_err(|e| classify(uri, &e, secrets))?;
            super::count_bytes("put", size);
            Ok(Put::Done(done.e_tag))
        };
        tokio::select! {
            _ = cancel.cancelled() => Err(StorageError::Cancelled),
            r = sending => r,
        }
    };
    if !matches!(outcome, Ok(Put::Done(_))) {
        let aborted = super::timed("abort_multipart", io, uri, upload.abort()).await;
        if !matches!(aborted, Ok(Ok(()))) {
            tracing::warn!(object = %uri, "could not abort a multipart upload (a bucket lifecycle rule removes it: docs/storage.md)");
        }
    }
    outcome
}

/// Waits for one in-flight part, bounded by `budget`.
async fn part_done(
    inflight: &mut futures::stream::FuturesUnordered<object_store::UploadPart>,
    budget: Duration,
    uri: &S3Uri,
    secrets: &[String],
) -> Result<(), StorageError> {
    match super::timed("put_part", budget, uri, inflight.next()).await? {
        Some(r) => r.map_err(|e| classify(uri, &e, secrets)),
        None => Ok(()),
    }
}

/// Every regular file under `dir`, as (path relative to `root` with `/`,
/// full path, size), leaving out spool's own ownership markers.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf, u64)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".spool-owner") || name.starts_with(".spool-partial-") {
            continue;
        }
        let ty = entry.file_type()?;
        let path = entry.path();
        if ty.is_dir() {
            walk(root, &path, out)?;
        } else if ty.is_file() {
            let rel = path
                .strip_prefix(root)
                .map_err(std::io::Error::other)?
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((rel, path.clone(), entry.metadata()?.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlists_go_after_their_segments_and_the_master_last() {
        let mut v = vec![
            "v/master.m3u8",
            "v/720p/index.m3u8",
            "v/720p/seg_000.ts",
            "v/360p/index.m3u8",
            "v/360p/seg_001.ts",
        ];
        v.sort_by(|a, b| (rank(a), a).cmp(&(rank(b), b)));
        assert_eq!(
            v,
            [
                "v/360p/seg_001.ts",
                "v/720p/seg_000.ts",
                "v/360p/index.m3u8",
                "v/720p/index.m3u8",
                "v/master.m3u8"
            ]
        );
        assert_eq!(content_type("a/b.M3U8"), "application/vnd.apple.mpegurl");
        assert_eq!(content_type("x.m4s"), "video/iso.segment");
        assert_eq!(content_type("x.ts"), "video/mp2t");
        assert_eq!(content_type("x.mp4"), "video/mp4");
    }
}
