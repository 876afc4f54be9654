//! Path confinement: inputs only from under the input root, outputs only under
//! the output root, and nothing a path check approved can be redirected
//! afterwards.
//!
//! Checking a path string and then handing it to FFmpeg leaves a window: a
//! directory swapped for a symlink between the check and the open sends the
//! read or the write elsewhere, and FFmpeg's muxers expand `%v`/`%d` in the
//! names they are given. So nothing user-named ever reaches FFmpeg as a path:
//!
//! - **Inputs** are opened here, relative to an open descriptor of the input
//!   root, with `openat2(RESOLVE_BENEATH)` (symlinks inside the root are
//!   followed, any escape is refused by the kernel), or, where the kernel lacks
//!   `openat2`, one component at a time with `O_NOFOLLOW`. FFmpeg then reads
//!   `/proc/self/fd/N`: the very file that was checked.
//! - **Outputs** are reached one directory at a time from the output root with
//!   `O_NOFOLLOW | O_DIRECTORY`, creating missing directories with `mkdirat`
//!   only after every existing component was checked, so a refusal creates
//!   nothing. A job writes into a staging directory it created itself
//!   (`.spool-partial-<uuid>`), through `/proc/self/fd/N/<spool's own names>`,
//!   and publishes with `renameat2` (`RENAME_NOREPLACE`, or `RENAME_EXCHANGE`
//!   to replace its own earlier output).
//! - **Ownership**: a published output carries a marker naming the job that
//!   wrote it (`.spool-owner` inside an HLS directory, `.<file>.spool-owner`
//!   beside an MP4). A job replaces an existing output only when the marker
//!   names that same job (an earlier attempt); anything else already at the
//!   target is a permanent [`EncodeError::OutputExists`].

mod input;
mod output;

pub use input::{InputFile, open_input};
pub(crate) use output::Staging;
pub use output::{OutputTarget, open_output};

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::EncodeError;

/// Longest output name, in bytes: deep enough for any tenant/date/id layout,
/// short enough that every path spool builds from it stays far below
/// `PATH_MAX` (4096).
pub const MAX_OUTPUT_NAME_BYTES: usize = 1024;
/// Longest single component, in bytes: `NAME_MAX` on every Linux filesystem.
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Most directory levels in an output name.
pub const MAX_OUTPUT_DEPTH: usize = 32;
/// Characters refused in output names besides control characters: FFmpeg
/// expands `%` in muxer file names; `#`, `?` and `:` mean fragment, query and
/// protocol to its URL parser; `\` and `|` are path or list separators
/// elsewhere. Names are never given to FFmpeg, but a name a tool downstream
/// misreads is refused as well.
pub const FORBIDDEN_OUTPUT_CHARS: &[char] = &['%', '#', '?', ':', '\\', '|'];
/// Prefix of spool's own staging entries; output names may not start with a
/// dot, so no job can name (or pre-create a symlink at) one of them.
const STAGING_PREFIX: &str = ".spool-partial-";
/// The ownership marker inside a published HLS directory.
const OWNER_MARKER: &str = ".spool-owner";
/// Bytes an MP4's ownership marker (`.<name>.spool-owner`) adds to its name:
/// an output file name may be at most [`MAX_COMPONENT_BYTES`] less this.
pub const MARKER_OVERHEAD: usize = 13;
/// Directories spool creates: readable by the services that serve them.
const DIR_MODE: u32 = 0o755;

fn refused(path: &str, reason: impl Into<String>) -> EncodeError {
    EncodeError::PathRefused {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// An I/O error on an output path: a full disk is worth a retry, a name the
/// filesystem refuses or a permission problem is not.
fn io_error(path: &str, what: &str, e: Errno) -> EncodeError {
    match e {
        Errno::NOSPC | Errno::DQUOT | Errno::IO | Errno::AGAIN | Errno::INTR => {
            EncodeError::Failed(format!("{what} {path:?}: {e}"))
        }
        // A volume remounted read-only (an I/O error on the disk, a storage
        // failover) is the node's trouble, not the job's: another worker, or
        // this one later, can write.
        Errno::ROFS => EncodeError::Failed(format!(
            "{what} {path:?}: {e} (the output volume is read-only on this node)"
        )),
        Errno::NAMETOOLONG => refused(path, format!("{what}: the name is too long ({e})")),
        _ => refused(path, format!("{what}: {e}")),
    }
}

/// The path FFmpeg is given for `name` inside the directory `dir`: resolved
/// by the kernel through the open descriptor, so renames or symlinks swapped
/// in above `dir` cannot redirect it.
pub(crate) fn fd_path(dir: &impl AsRawFd, name: &str) -> String {
    format!("/proc/self/fd/{}/{name}", dir.as_raw_fd())
}

/// Checks an output name and splits it into components. Pure: no filesystem
/// access (fuzzed by `fuzz/fuzz_targets/output_name.rs`).
///
/// Accepted: a relative path of at most [`MAX_OUTPUT_DEPTH`] components, each
/// 1..=[`MAX_COMPONENT_BYTES`] bytes, not starting with `.`, without control
/// characters or [`FORBIDDEN_OUTPUT_CHARS`]; at most
/// [`MAX_OUTPUT_NAME_BYTES`] in all. Empty components (`a//b`, a trailing `/`)
/// are ignored.
pub fn check_output_name(given: &str) -> Result<Vec<&str>, EncodeError> {
    if given.len() > MAX_OUTPUT_NAME_BYTES {
        return Err(refused(
            &given.chars().take(64).collect::<String>(),
            format!(
                "output names are at most {MAX_OUTPUT_NAME_BYTES} bytes; this one has {}",
                given.len()
            ),
        ));
    }
    if given.starts_with('/') {
        return Err(refused(
            given,
            "output names are relative to the output root",
        ));
    }
    let parts: Vec<&str> = given.split('/').filter(|c| !c.is_empty()).collect();
    if parts.is_empty() {
        return Err(refused(given, "it names no file"));
    }
    if parts.len() > MAX_OUTPUT_DEPTH {
        return Err(refused(
            given,
            format!("at most {MAX_OUTPUT_DEPTH} directory levels"),
        ));
    }
    for c in &parts {
        if *c == ".." {
            return Err(refused(given, "`..` is not allowed"));
        }
        if c.starts_with('.') {
            return Err(refused(
                given,
                format!("{c:?}: names starting with `.` are reserved for spool's staging files"),
            ));
        }
        if c.len() > MAX_COMPONENT_BYTES {
            return Err(refused(
                given,
                format!(
                    "a component of {} bytes; the filesystem allows at most {MAX_COMPONENT_BYTES}",
                    c.len()
                ),
            ));
        }
        if let Some(bad) = c
            .chars()
            .find(|ch| ch.is_control() || FORBIDDEN_OUTPUT_CHARS.contains(ch))
        {
            return Err(refused(
                given,
                format!(
                    "{bad:?} is not allowed in output names (nor control characters or any of {})",
                    FORBIDDEN_OUTPUT_CHARS.iter().collect::<String>()
                ),
            ));
        }
    }
    Ok(parts)
}

/// The properties every accepted output name has; the fuzz target and the
/// corpus replay test check them for every input. `Err` names a violation.
#[doc(hidden)]
pub fn output_name_invariants(given: &str) -> Result<(), String> {
    let Ok(parts) = check_output_name(given) else {
        return Ok(());
    };
    if parts.is_empty() || parts.len() > MAX_OUTPUT_DEPTH {
        return Err(format!("{given:?}: {} components", parts.len()));
    }
    for c in &parts {
        let bad = c.is_empty()
            || c.len() > MAX_COMPONENT_BYTES
            || c.starts_with('.')
            || c.contains('/')
            || c.chars()
                .any(|ch| ch.is_control() || FORBIDDEN_OUTPUT_CHARS.contains(&ch));
        if bad {
            return Err(format!("{given:?}: accepted component {c:?}"));
        }
    }
    let joined = parts.join("/");
    if !Path::new(&joined)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(format!(
            "{given:?}: {joined:?} is not a plain relative path"
        ));
    }
    Ok(())
}

fn open_root(root: &Path, given: &str, which: &str) -> Result<OwnedFd, EncodeError> {
    rustix::fs::open(
        root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        refused(
            given,
            format!("the {which} root {} is unusable: {e}", root.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("in");
        std::fs::create_dir(&root)?;
        std::fs::write(root.join("ok.mp4"), b"x")?;
        std::fs::write(dir.path().join("secret"), b"x")?;
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link.mp4"))?;
        std::os::unix::fs::symlink("ok.mp4", root.join("inside.mp4"))?;
        assert!(open_input(&root, "ok.mp4").is_ok());
        assert!(open_input(&root, "inside.mp4").is_ok());
        assert!(open_input(&root, &root.join("ok.mp4").to_string_lossy()).is_ok());
        for bad in [
            "../secret",
            "link.mp4",
            "/etc/passwd",
            "missing.mp4",
            "a/../../secret",
            ".",
        ] {
            assert!(
                matches!(open_input(&root, bad), Err(EncodeError::PathRefused { .. })),
                "{bad} was accepted"
            );
        }
        let out = dir.path().join("out");
        std::fs::create_dir(&out)?;
        let t = open_output(&out, "x/y.mp4")?;
        assert_eq!(t.name(), "y.mp4");
        assert!(t.display().starts_with(out.canonicalize()?));
        std::os::unix::fs::symlink(dir.path(), out.join("esc"))?;
        for bad in ["../x.mp4", "/tmp/x.mp4", "esc/x.mp4", "esc/new/deeper/x"] {
            assert!(open_output(&out, bad).is_err(), "{bad} was accepted");
        }
        assert!(
            !dir.path().join("new").exists(),
            "a directory was created outside the root"
        );
        Ok(())
    }

    #[test]
    fn output_names_are_literal() {
        for ok in ["a", "tenant/videos/film.mp4", "a b/c-d_e.mp4", "x//y/"] {
            assert!(check_output_name(ok).is_ok(), "{ok} was refused");
        }
        let long = "a".repeat(MAX_COMPONENT_BYTES + 1);
        let deep = vec!["d"; MAX_OUTPUT_DEPTH + 1].join("/");
        for bad in [
            "",
            "/",
            "evil%v",
            "esc%v/x",
            "seg%05d",
            "a#b",
            "a?b",
            "file:x",
            "a\nb",
            "a\\b",
            ".hidden",
            "a/.spool-partial-x",
            "a/../b",
            &long,
            &deep,
        ] {
            assert!(check_output_name(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
