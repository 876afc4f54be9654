//! Inputs: an object downloaded to the scratch directory, bounded in size
//! and memory (one chunk at a time), with progress.

use futures::StreamExt;
use object_store::ObjectStore;
use spool_encode_spec::S3Uri;
use std::path::Path;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::{Storage, classify, object_path, stalled};
use crate::error::StorageError;

/// Free space kept on the scratch filesystem beyond the input itself: the
/// encode's own outputs go there too when they are bound for storage.
const SCRATCH_MARGIN: u64 = 64 << 20;

impl Storage {
    /// Downloads `uri` into a new temporary file in `dir`, refusing an object
    /// over `max_bytes` (from the GET's headers, before the first byte of the
    /// body, and again while reading) and one that would not fit in `dir`.
    /// `progress` gets (bytes so far, object size), at most four times a
    /// second. The file is removed when the returned value drops, and at once
    /// on any error. A storage outage is waited out within the outage budget.
    pub async fn download(
        &self,
        uri: &S3Uri,
        dir: &Path,
        max_bytes: u64,
        progress: &mut (dyn FnMut(u64, u64) + Send),
        cancel: &CancellationToken,
    ) -> Result<tempfile::NamedTempFile, StorageError> {
        let stores = self;
        let store = stores.store(uri)?;
        let path = object_path(uri)?;
        let (file, out) = crate::scratch::download_file(dir).map_err(|e| {
            StorageError::Local(format!(
                "cannot create a download file in {} (SPOOL_SCRATCH_DIR): {e}",
                dir.display()
            ))
        })?;
        let io = stores.io_timeout();
        let budget = stores.outage_budget();
        let secrets = &stores.secrets;
        let mut report = super::Reporter::new(progress);
        let r: Result<(), StorageError> = async {
            let mut out = tokio::fs::File::from_std(out);
            // A storage outage is waited out within its budget: the
            // download starts over (the file emptied) after each.
            let mut outage = super::Outage::new(budget);
            let fetch = async { loop {
                let once = async {
                out.set_len(0).await.map_err(|e| {
                    StorageError::Local(format!("emptying the download file: {e}"))
                })?;
                out.seek(std::io::SeekFrom::Start(0)).await.map_err(|e| {
                    StorageError::Local(format!("rewinding the download file: {e}"))
                })?;
                // One GET: its headers carry the size, checked before a
                // byte of the body is read (dropping the stream closes it).
                let got = super::timed("get", io, uri, store.get(&path))
                    .await?
                    .map_err(|e| classify(uri, &e, secrets))?;
                let total = got.meta.size;
                if total > max_bytes {
                    return Err(too_big(uri, max_bytes));
                }
                if let Some(free) = free_bytes(dir)
                    && total + SCRATCH_MARGIN > free
                {
                    return Err(StorageError::Local(format!(
                        "{uri} is {total} bytes but the scratch directory {} (SPOOL_SCRATCH_DIR) has {free} free",
                        dir.display()
                    )));
                }
                // A stall is `io` without a byte; a trickle that never
                // stalls is bounded by the whole download's budget.
                let budget = super::transfer_budget(io, total);
                let deadline = tokio::time::Instant::now() + budget;
                let mut stream = got.into_stream();
                let mut done: u64 = 0;
                report.report(0, total, true);
                loop {
                    let next = tokio::time::timeout_at(
                        deadline.min(tokio::time::Instant::now() + io),
                        stream.next(),
                    )
                    .await;
                    let chunk = match next {
                        Ok(c) => c,
                        Err(_) if tokio::time::Instant::now() >= deadline => {
                            return Err(StorageError::Unavailable {
                                uri: uri.to_string(),
                                reason: format!(
                                    "the download took longer than {budget:?} ({done} of {total} bytes): slower than {} KiB/s",
                                    super::SLOWEST_BYTES_PER_S >> 10
                                ),
                            });
                        }
                        Err(_) => return Err(stalled(uri, io)),
                    };
                    let Some(chunk) = chunk else { break };
                    let chunk = chunk.map_err(|e| classify(uri, &e, secrets))?;
                    done += chunk.len() as u64;
                    super::count_bytes("get", chunk.len() as u64);
                    if done > max_bytes {
                        return Err(too_big(uri, max_bytes));
                    }
                    out.write_all(&chunk).await.map_err(|e| {
                        StorageError::Local(format!(
                            "writing the download of {uri} to {} (SPOOL_SCRATCH_DIR): {e}",
                            dir.display()
                        ))
                    })?;
                    report.report(done, total, false);
                }
                out.flush().await.map_err(|e| {
                    StorageError::Local(format!("writing the download of {uri}: {e}"))
                })?;
                if done != total {
                    return Err(StorageError::Unavailable {
                        uri: uri.to_string(),
                        reason: format!("the download ended after {done} of {total} bytes"),
                    });
                }
                report.report(done, total, true);
                Ok(())
                };
                match once.await {
                    Ok(()) => break Ok(()),
                    Err(e) => outage.pause(e, cancel, uri).await?,
                }
            } };
            tokio::select! {
                _ = cancel.cancelled() => Err(StorageError::Cancelled),
                r = fetch => r,
            }
        }
        .await;
        r.map(|()| file)
    }
}

fn too_big(uri: &S3Uri, max: u64) -> StorageError {
    StorageError::TooLarge {
        path: uri.to_string(),
        reason: format!("larger than {max} bytes (SPOOL_MAX_INPUT_BYTES)"),
    }
}

/// Bytes an unprivileged writer may still use on `dir`'s filesystem
/// (`None` when it cannot be read).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}
