//! Outputs: the files of a finished encode uploaded in an order that never
//! shows a reader a playlist naming a missing object, each object tagged with
//! its job, and everything this attempt wrote removed again if it fails.

use std::collections::HashSet;
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

use super::{
    MULTIPART_THRESHOLD, OWNER_METADATA, PART_CONCURRENCY, Stores, classify, object_path, stalled,
};
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

/// Uploads every file under `local` (the encode's published outputs, named
/// as their keys are beside `base`'s last segment). `hls_dirs` are the HLS
/// directories among them: once everything is up, objects of this job under
/// them that this attempt did not write (an earlier attempt's) are removed.
/// On failure or cancel, what this attempt wrote is deleted again. A cancel
/// takes effect between objects (and between the parts of a large one).
pub(crate) fn upload(
    stores: &Stores,
    local: &Path,
    base: &S3Uri,
    hls_dirs: &[String],
    owner: Option<&str>,
    progress: &mut dyn FnMut(u64, u64),
    cancel: &CancellationToken,
) -> Result<Uploaded, EncodeError> {
    let store = stores.store(base)?;
    let mut files = Vec::new();
    walk(local, local, &mut files)
        .map_err(|e| EncodeError::Failed(format!("listing the outputs to upload: {e}")))?;
    files.sort_by(|a, b| (rank(&a.0), &a.0).cmp(&(rank(&b.0), &b.0)));
    let total: u64 = files.iter().map(|f| f.2).sum();
    let secrets = stores.secrets.clone();
    let io = stores.io_timeout();
    let prefix = base.parent_prefix().to_owned();
    let bucket = base.bucket.clone();
    let owner = owner.map(str::to_owned);
    let hls_dirs: Vec<String> = hls_dirs.iter().map(|d| format!("{prefix}{d}")).collect();
    let cancel = cancel.clone();
    stores.drive(progress, move |mut report| async move {
        let mut written: Vec<(S3Uri, ObjectPath)> = Vec::new();
        let mut objects = Vec::new();
        let mut done = 0u64;
        let run = async {
            for (rel, file, size) in &files {
                // A cancel stops between objects: a single PUT dropped midway
                // could still land after the cleanup's DELETE.
                if cancel.is_cancelled() {
                    return Err(EncodeError::Cancelled);
                }
                let uri = S3Uri {
                    bucket: bucket.clone(),
                    key: format!("{prefix}{rel}"),
                };
                let path = object_path(&uri)?;
                let ct = content_type(rel);
                let attrs = attributes(ct, owner.as_deref());
                // Recorded before the request: a failed or cancelled one
                // may still have created the object.
                written.push((uri.clone(), path.clone()));
                let etag = put_file(
                    &store, &uri, &path, file, *size, attrs, io, &secrets, &cancel,
                )
                .await?;
                done += size;
                report.report(done, total, false);
                objects.push(StoredObject {
                    uri: uri.to_string(),
                    size_bytes: *size,
                    etag,
                    content_type: ct,
                });
            }
            // An earlier attempt's leftovers under our HLS directories.
            let ours: HashSet<&ObjectPath> = written.iter().map(|(_, p)| p).collect();
            for dir in &hls_dirs {
                let dir_uri = S3Uri {
                    bucket: bucket.clone(),
                    key: dir.clone(),
                };
                let dir_path = object_path(&dir_uri)?;
                let listed: Vec<_> = store.list(Some(&dir_path)).collect().await;
                for meta in listed {
                    let meta = meta.map_err(|e| classify(&dir_uri, &e, &secrets))?;
                    if ours.contains(&meta.location) {
                        continue;
                    }
                    let whose = owner_of(&store, &meta.location)
                        .await
                        .map_err(|e| classify(&dir_uri, &e, &secrets))?;
                    if whose.is_some() && whose == owner {
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
                for (uri, path) in written.iter().rev() {
                    let gone = tokio::time::timeout(io, store.delete(path)).await;
                    if !matches!(gone, Ok(Ok(()) | Err(object_store::Error::NotFound { .. }))) {
                        tracing::warn!(object = %uri, "could not remove a partial output");
                    }
                }
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

/// Uploads one file: a single PUT, or a multipart upload (aborted on any
/// failure or cancel) when it is large. Returns the ETag.
#[allow(clippy::too_many_arguments)]
async fn put_file(
    store: &Arc<AmazonS3>,
    uri: &S3Uri,
    path: &ObjectPath,
    file: &Path,
    size: u64,
    attributes: Attributes,
    io: Duration,
    secrets: &[String],
    cancel: &CancellationToken,
) -> Result<Option<String>, EncodeError> {
    let read_err = |e: std::io::Error| {
        EncodeError::Failed(format!("reading output {} to upload: {e}", file.display()))
    };
    if size <= MULTIPART_THRESHOLD as u64 {
        let bytes = tokio::fs::read(file).await.map_err(read_err)?;
        let opts = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        let put = tokio::time::timeout(
            request_budget(io, size),
            store.put_opts(path, PutPayload::from(bytes), opts),
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
    let upload = tokio::time::timeout(io, store.put_multipart_opts(path, opts))
        .await
        .map_err(|_| stalled(uri, io))?
        .map_err(|e| classify(uri, &e, secrets))?;
    let mut parts = WriteMultipart::new_with_chunk_size(upload, MULTIPART_THRESHOLD);
    let sent = async {
        let mut f = tokio::fs::File::open(file).await.map_err(read_err)?;
        let mut buf = vec![0u8; MULTIPART_THRESHOLD];
        loop {
            let budget = request_budget(io, MULTIPART_THRESHOLD as u64 * PART_CONCURRENCY as u64);
            tokio::time::timeout(budget, parts.wait_for_capacity(PART_CONCURRENCY))
                .await
                .map_err(|_| stalled(uri, io))?
                .map_err(|e| classify(uri, &e, secrets))?;
            let n = f.read(&mut buf).await.map_err(read_err)?;
            if n == 0 {
                return Ok(());
            }
            parts.write(&buf[..n]);
        }
    };
    let sent: Result<(), EncodeError> = tokio::select! {
        _ = cancel.cancelled() => Err(EncodeError::Cancelled),
        r = sent => r,
    };
    match sent {
        Ok(()) => {
            let budget = request_budget(io, MULTIPART_THRESHOLD as u64 * PART_CONCURRENCY as u64);
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
