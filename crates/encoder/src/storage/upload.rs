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
    Attribute, AttributeValue, Attributes, GetOptions, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, WriteMultipart,
};
use spool_encode_spec::S3Uri;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::{OWNER_METADATA, PART_CONCURRENCY, Stores, classify, object_path, stalled};
use crate::error::EncodeError;

/// Upload throughput assumed when bounding one request's time: a request
/// that moves slower than this, after the I/O timeout, counts as stalled.
const SLOWEST_BYTES_PER_S: u64 = 1 << 20;

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
pub(crate) struct Uploaded {
    pub objects: Vec<StoredObject>,
}

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

/// Whose an object is, from its metadata; `None` when it names no job.
async fn owner_of(store: &AmazonS3, path: &ObjectPath) -> object_store::Result<Option<String>> {
    let head = store
        .get_opts(
            path,
            GetOptions {
                head: true,
                ..GetOptions::default()
            },
        )
        .await?;
    Ok(head
        .attributes
        .get(&Attribute::Metadata(OWNER_METADATA.into()))
        .map(|v| v.as_ref().to_owned()))
}

/// Refuses an encode whose outputs would replace objects that are not its
/// own: `names` are the output files (or, `true`, HLS directories) beside
/// `base`'s last segment. Runs before any work.
pub(crate) fn check_owner(
    stores: &Stores,
    base: &S3Uri,
    names: &[(String, bool)],
    owner: Option<&str>,
    cancel: &CancellationToken,
) -> Result<(), EncodeError> {
    let store = stores.store(base)?;
    let secrets = stores.secrets.clone();
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
    let owner = owner.map(str::to_owned);
    stores.run(cancel, async move {
        for (uri, dir) in targets {
            let path = object_path(&uri)?;
            let existing: Vec<ObjectPath> = if dir {
                let mut list = store.list(Some(&path));
                let mut found = Vec::new();
                while let Some(meta) = tokio::time::timeout(io, list.next())
                    .await
                    .map_err(|_| stalled(&uri, io))?
                {
                    found.push(meta.map_err(|e| classify(&uri, &e, &secrets))?.location);
                }
                found
            } else {
                vec![path]
            };
            for p in existing {
                let whose = match tokio::time::timeout(io, owner_of(&store, &p))
                    .await
                    .map_err(|_| stalled(&uri, io))?
                {
                    Err(object_store::Error::NotFound { .. }) => continue,
                    Err(e) => return Err(classify(&uri, &e, &secrets)),
                    Ok(w) => w,
                };
                if whose.is_none() || whose != owner {
                    return Err(EncodeError::OutputExists {
                        path: format!("s3://{}/{p}", uri.bucket),
                        reason: match whose {
                            Some(j) => format!("job {j} wrote it"),
                            None => "an object no spool job wrote".into(),
                        },
                    });
                }
            }
        }
        Ok(())
    })
}

/// What one attempt has written so far, shared by the uploads made while the
/// encode runs (finished HLS segments) and the final upload, so a failure
/// removes all of it and the final upload skips what is already up.
pub(crate) struct Session {
    store: Arc<AmazonS3>,
    bucket: String,
    /// The key prefix the output names are relative to.
    prefix: String,
    owner: Option<String>,
    secrets: Vec<String>,
    io: Duration,
    part_size: usize,
    /// Every object a request was sent for, in order (a failed or cancelled
    /// request may still have created its object).
    written: Vec<(S3Uri, ObjectPath)>,
    /// Files uploaded while the encode ran, by output-relative name, with
    /// the staging directory they were read from.
    early: HashMap<String, StoredObject>,
    early_from: Option<String>,
}

impl Session {
    /// A session for outputs named relative to `base`'s parent prefix.
    pub(crate) fn new(
        stores: &Stores,
        base: &S3Uri,
        owner: Option<&str>,
    ) -> Result<Session, EncodeError> {
        Ok(Session {
            store: stores.store(base)?,
            bucket: base.bucket.clone(),
            prefix: base.parent_prefix().to_owned(),
            owner: owner.map(str::to_owned),
            secrets: stores.secrets.clone(),
            io: stores.io_timeout(),
            part_size: stores.part_size(),
            written: Vec::new(),
            early: HashMap::new(),
            early_from: None,
        })
    }

    fn uri(&self, rel: &str) -> S3Uri {
        S3Uri {
            bucket: self.bucket.clone(),
            key: format!("{}{rel}", self.prefix),
        }
    }

    /// Uploads the open file `file` (`size` bytes) as `rel`; `sent` hears
    /// the bytes sent so far of a multipart upload.
    async fn put(
        &mut self,
        rel: &str,
        file: tokio::fs::File,
        size: u64,
        sent: &mut (dyn FnMut(u64) + Send),
        cancel: &CancellationToken,
    ) -> Result<StoredObject, EncodeError> {
        let uri = self.uri(rel);
        let path = object_path(&uri)?;
        let ct = content_type(rel);
        let attrs = attributes(ct, self.owner.as_deref());
        // Recorded before the request: a failed or cancelled one may still
        // have created the object.
        self.written.push((uri.clone(), path.clone()));
        let etag = put_file(self, &uri, &path, file, size, attrs, sent, cancel).await?;
        Ok(StoredObject {
            uri: uri.to_string(),
            size_bytes: size,
            etag,
            content_type: ct,
        })
    }

    /// Deletes everything this attempt wrote (best effort: a server that
    /// is down leaves it to the retry, which replaces its own objects).
    pub(crate) async fn remove_written(&self) {
        for (uri, path) in self.written.iter().rev() {
            let gone = tokio::time::timeout(self.io, self.store.delete(path)).await;
            if !matches!(gone, Ok(Ok(()) | Err(object_store::Error::NotFound { .. }))) {
                tracing::warn!(object = %uri, "could not remove a partial output");
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
    ) -> Result<(), EncodeError> {
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
                return Err(EncodeError::Cancelled);
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

/// Uploads of finished HLS segments while the encode runs, on the storage
/// runtime.
pub(crate) struct SegmentUploads {
    stop: CancellationToken,
    done: std::sync::mpsc::Receiver<(Session, Result<(), EncodeError>)>,
}

/// How often the staging directory is looked at for finished segments.
const SEGMENT_POLL: Duration = Duration::from_millis(200);

impl SegmentUploads {
    /// Starts watching `scratch` for finished segments of the HLS output
    /// directory `hls_dir`. An upload failure cancels `encode` (so the
    /// encode stops early) and is returned by [`SegmentUploads::finish`].
    pub(crate) fn start(
        stores: &Stores,
        mut session: Session,
        scratch: &Path,
        hls_dir: &str,
        encode: CancellationToken,
        cancel: &CancellationToken,
    ) -> Result<SegmentUploads, EncodeError> {
        let stop = CancellationToken::new();
        let (tx, done) = std::sync::mpsc::channel();
        let (scratch, hls_dir) = (scratch.to_path_buf(), hls_dir.to_owned());
        let (stopped, cancel) = (stop.clone(), cancel.clone());
        stores.spawn(async move {
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
            let _ = tx.send((session, r));
        })?;
        Ok(SegmentUploads { stop, done })
    }

    /// Stops watching (an upload in flight completes) and returns the
    /// session with the first upload error, if any.
    pub(crate) fn finish(self) -> Result<(Session, Result<(), EncodeError>), EncodeError> {
        self.stop.cancel();
        self.done
            .recv()
            .map_err(|_| EncodeError::Failed("the segment upload task died".into()))
    }
}

/// Uploads every file under `local` (the encode's published outputs, named
/// as their keys are beside `base`'s last segment) that `session` has not
/// already uploaded. `hls_dirs` are the HLS directories among them: once
/// everything is up, objects of this job under them that are not among the
/// outputs (an earlier attempt's) are removed. On failure or cancel, what
/// this attempt wrote is deleted again. A cancel takes effect between
/// objects (and between the parts of a large one).
pub(crate) fn upload(
    stores: &Stores,
    mut session: Session,
    local: &Path,
    hls_dirs: &[String],
    progress: &mut dyn FnMut(u64, u64),
    cancel: &CancellationToken,
) -> Result<Uploaded, EncodeError> {
    let mut files = Vec::new();
    walk(local, local, &mut files)
        .map_err(|e| EncodeError::Failed(format!("listing the outputs to upload: {e}")))?;
    files.sort_by(|a, b| (rank(&a.0), &a.0).cmp(&(rank(&b.0), &b.0)));
    let early = std::mem::take(&mut session.early);
    let total: u64 = files
        .iter()
        .filter(|f| early.get(&f.0).is_none_or(|o| o.size_bytes != f.2))
        .map(|f| f.2)
        .sum();
    let hls_dirs: Vec<String> = hls_dirs
        .iter()
        .map(|d| format!("{}{d}", session.prefix))
        .collect();
    let cancel = cancel.clone();
    stores.drive(progress, move |mut report| async move {
        let mut objects = Vec::new();
        let mut done = 0u64;
        let run = async {
            for (rel, file, size) in &files {
                if let Some(o) = early.get(rel).filter(|o| o.size_bytes == *size) {
                    objects.push(o.clone());
                    continue;
                }
                // A cancel stops between objects: a single PUT dropped midway
                // could still land after the cleanup's DELETE.
                if cancel.is_cancelled() {
                    return Err(EncodeError::Cancelled);
                }
                let f = tokio::fs::File::open(file).await.map_err(|e| {
                    EncodeError::Failed(format!("reading output {} to upload: {e}", file.display()))
                })?;
                let before = done;
                let obj = session
                    .put(
                        rel,
                        f,
                        *size,
                        &mut |n| report.report(before + n, total, false),
                        &cancel,
                    )
                    .await?;
                done += size;
                report.report(done, total, false);
                objects.push(obj);
            }
            // Objects of this job under our HLS directories that are not
            // outputs: an earlier attempt's, or an early upload whose encode
            // attempt was replaced by a fallback.
            let ours: HashSet<String> = objects.iter().map(|o| o.uri.clone()).collect();
            let (store, secrets) = (session.store.clone(), session.secrets.clone());
            for (uri, path) in &session.written {
                if !ours.contains(&uri.to_string()) {
                    let _ = store.delete(path).await;
                }
            }
            for dir in &hls_dirs {
                let dir_uri = S3Uri {
                    bucket: session.bucket.clone(),
                    key: dir.clone(),
                };
                let dir_path = object_path(&dir_uri)?;
                let listed: Vec<_> = store.list(Some(&dir_path)).collect().await;
                for meta in listed {
                    let meta = meta.map_err(|e| classify(&dir_uri, &e, &secrets))?;
                    let uri = format!("s3://{}/{}", session.bucket, meta.location);
                    if ours.contains(&uri) {
                        continue;
                    }
                    let whose = owner_of(&store, &meta.location)
                        .await
                        .map_err(|e| classify(&dir_uri, &e, &secrets))?;
                    if whose.is_some() && whose == session.owner {
                        store
                            .delete(&meta.location)
                            .await
                            .map_err(|e| classify(&dir_uri, &e, &secrets))?;
                    }
                }
            }
            report.report(done, total, true);
            Ok(())
        };
        match run.await {
            Ok(()) => Ok(Uploaded { objects }),
            Err(e) => {
                session.remove_written().await;
                Err(e)
            }
        }
    })
}

fn attributes(content_type: &'static str, owner: Option<&str>) -> Attributes {
    let mut a = Attributes::new();
    a.insert(Attribute::ContentType, AttributeValue::from(content_type));
    if let Some(o) = owner {
        a.insert(
            Attribute::Metadata(OWNER_METADATA.into()),
            AttributeValue::from(o.to_owned()),
        );
    }
    a
}

/// How long one request moving `bytes` may take before it counts as stalled.
fn request_budget(io: Duration, bytes: u64) -> Duration {
    io + Duration::from_secs(bytes / SLOWEST_BYTES_PER_S)
}

/// Uploads one open file: a single PUT, or a multipart upload (aborted on
/// any failure or cancel) when it is larger than a part. Returns the ETag.
#[allow(clippy::too_many_arguments)]
async fn put_file(
    s: &Session,
    uri: &S3Uri,
    path: &ObjectPath,
    mut file: tokio::fs::File,
    size: u64,
    attributes: Attributes,
    sent: &mut (dyn FnMut(u64) + Send),
    cancel: &CancellationToken,
) -> Result<Option<String>, EncodeError> {
    let (io, secrets, part) = (s.io, &s.secrets[..], s.part_size);
    let read_err =
        |e: std::io::Error| EncodeError::Failed(format!("reading output {uri} to upload: {e}"));
    if size <= part as u64 {
        let mut bytes = Vec::with_capacity(size as usize);
        file.read_to_end(&mut bytes).await.map_err(read_err)?;
        let opts = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        let put = tokio::time::timeout(
            request_budget(io, size),
            s.store.put_opts(path, PutPayload::from(bytes), opts),
        )
        .await
        .map_err(|_| stalled(uri, io))?
        .map_err(|e| classify(uri, &e, secrets))?;
        return Ok(put.e_tag);
    }
    let opts = PutMultipartOptions {
        attributes,
        ..PutMultipartOptions::default()
    };
    let upload = tokio::time::timeout(io, s.store.put_multipart_opts(path, opts))
        .await
        .map_err(|_| stalled(uri, io))?
        .map_err(|e| classify(uri, &e, secrets))?;
    let mut parts = WriteMultipart::new_with_chunk_size(upload, part);
    let budget = request_budget(io, part as u64 * PART_CONCURRENCY as u64);
    let sending = async {
        let mut buf = vec![0u8; part];
        let mut total = 0u64;
        loop {
            tokio::time::timeout(budget, parts.wait_for_capacity(PART_CONCURRENCY))
                .await
                .map_err(|_| stalled(uri, io))?
                .map_err(|e| classify(uri, &e, secrets))?;
            let n = file.read(&mut buf).await.map_err(read_err)?;
            if n == 0 {
                return Ok(());
            }
            parts.write(&buf[..n]);
            total += n as u64;
            sent(total);
        }
    };
    let sending: Result<(), EncodeError> = tokio::select! {
        _ = cancel.cancelled() => Err(EncodeError::Cancelled),
        r = sending => r,
    };
    match sending {
        Ok(()) => {
            let done = tokio::time::timeout(budget, parts.finish())
                .await
                .map_err(|_| stalled(uri, io))?
                .map_err(|e| classify(uri, &e, secrets))?;
            Ok(done.e_tag)
        }
        Err(e) => {
            if tokio::time::timeout(io, parts.abort()).await.is_err() {
                tracing::warn!(object = %uri, "could not abort a multipart upload");
            }
            Err(e)
        }
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
