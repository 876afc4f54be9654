//! Names of this process's files in the scratch directory, and removal of
//! what a killed worker left there.
//!
//! Every download (`spool-input-<tag>-…`) and every encode bound for object
//! storage (`spool-out-<tag>-…`) carries the tag of the process that made
//! it: its pid and its start time (`/proc/<pid>/stat`). When an encoder
//! starts, entries whose process is gone (or is another process now
//! holding the same pid, as a restarted container's pid 1 does) are
//! removed, so a SIGKILL never leaks scratch space for good. Entries
//! without a tag (written by spool before tags) are removed once an hour
//! old.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

/// The prefix of a download's scratch file.
pub const INPUT: &str = "spool-input-";
/// The prefix of an encode's scratch output directory.
pub const OUTPUT: &str = "spool-out-";
/// Untagged entries older than this are removed at start.
const LEGACY_AGE: Duration = Duration::from_secs(3600);

/// Start time of `pid` in clock ticks since boot (field 22 of its stat).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// This process's tag: `<pid>.<start time>`.
pub fn tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let pid = std::process::id();
        format!("{pid}.{}", start_time(pid).unwrap_or(0))
    })
}

/// `prefix` with this process's tag, for `tempfile::Builder::prefix`.
pub fn prefix(kind: &str) -> String {
    format!("{kind}{}-", tag())
}

/// A new download file in `dir`, named with this process's tag (so a killed
/// worker's is swept at the next start), with a second handle to write
/// through; the file is removed when the first drops.
pub fn download_file(dir: &Path) -> std::io::Result<(tempfile::NamedTempFile, std::fs::File)> {
    let file = tempfile::Builder::new()
        .prefix(&prefix(INPUT))
        .tempfile_in(dir)?;
    let out = file.as_file().try_clone()?;
    Ok((file, out))
}

/// Whether the process tagged `t` still runs.
fn alive(t: &str) -> Option<bool> {
    let (pid, start) = t.split_once('.')?;
    let (pid, start): (u32, u64) = (pid.parse().ok()?, start.parse().ok()?);
    Some(start_time(pid) == Some(start))
}

/// Removes the entries of `dir` that processes now gone left behind;
/// returns how many. Never fails: a sweep that cannot read is skipped.
pub fn sweep(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix(INPUT)
            .or_else(|| name.strip_prefix(OUTPUT))
        else {
            continue;
        };
        let stale = match rest.split_once('-').and_then(|(t, _)| alive(t)) {
            Some(alive) => !alive,
            None => e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > LEGACY_AGE),
        };
        if !stale {
            continue;
        }
        let path = e.path();
        let gone = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        match gone {
            Ok(()) => removed += 1,
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot remove a stale scratch entry")
            }
        }
    }
    if removed > 0 {
        tracing::info!(removed, dir = %dir.display(), "removed scratch entries of workers that are gone");
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_gone_processes_are_removed_and_live_ones_kept() -> std::io::Result<()> {
        let d = tempfile::tempdir()?;
        let mine = d.path().join(format!("{}abc", prefix(INPUT)));
        std::fs::write(&mine, b"live")?;
        // pid 4194304 is past Linux's largest pid: never alive.
        let gone_in = d.path().join(format!("{INPUT}4194304.77-x"));
        std::fs::write(&gone_in, b"stale")?;
        let gone_out = d.path().join(format!("{OUTPUT}4194304.77-y"));
        std::fs::create_dir_all(gone_out.join("hls/720p"))?;
        // Our own pid with another start time: a restarted container.
        let reused = d.path().join(format!("{OUTPUT}{}.1-z", std::process::id()));
        std::fs::create_dir(&reused)?;
        // An untagged, fresh entry (an older spool's, maybe running).
        let legacy = d.path().join(format!("{INPUT}qwerty"));
        std::fs::write(&legacy, b"?")?;
        let other = d.path().join("unrelated");
        std::fs::write(&other, b"x")?;
        assert_eq!(sweep(d.path()), 3);
        assert!(mine.exists() && legacy.exists() && other.exists());
        assert!(!gone_in.exists() && !gone_out.exists() && !reused.exists());
        Ok(())
    }
}
