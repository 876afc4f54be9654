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

/// An input opened inside the input root. FFmpeg reads it through
/// [`InputFile::ffmpeg_path`], so it reads exactly the file that was checked.
#[derive(Debug)]
pub struct InputFile {
    /// The open file; its descriptor number is in the path FFmpeg is given.
    file: File,
    /// Where it was found, for results and messages.
    path: PathBuf,
}

impl InputFile {
    /// `/proc/self/fd/N`: the checked file, whatever happens to its path.
    pub fn ffmpeg_path(&self) -> String {
        format!("/proc/self/fd/{}", self.file.as_raw_fd())
    }

    /// The path it was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first bytes of the file (for format checks that precede FFmpeg).
    pub(crate) fn head(&self, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        let got = rustix::io::pread(&self.file, &mut buf, 0).unwrap_or(0);
        buf.truncate(got);
        buf
    }
}

/// Opens an input inside `root`. It must be a regular file and, symlinks
/// followed, stay inside the root; the check and the open are one kernel call.
pub fn open_input(root: &Path, given: &str) -> Result<InputFile, EncodeError> {
    if given.contains('\0') {
        return Err(refused(given, "contains a NUL byte"));
    }
    let p = Path::new(given);
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(refused(given, "`..` is not allowed"));
    }
    let root_fd = open_root(root, given, "input")?;
    let outside = || {
        refused(
            given,
            "it resolves outside the input root (symlink or absolute path)",
        )
    };
    let rel: PathBuf = if p.is_absolute() {
        let canonical = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        p.strip_prefix(root)
            .or_else(|_| p.strip_prefix(&canonical))
            .map_err(|_| outside())?
            .to_path_buf()
    } else {
        p.to_path_buf()
    };
    if rel.as_os_str().is_empty() {
        return Err(refused(given, "it names no file"));
    }
    // O_NONBLOCK: opening a FIFO planted in the input root must not block.
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let fd = match rustix::fs::openat2(
        &root_fd,
        &rel,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(Errno::XDEV) => return Err(outside()),
        // No openat2 (old kernel, or a seccomp profile that refuses it): walk
        // one component at a time, refusing every symlink.
        Err(Errno::NOSYS | Errno::PERM) => open_nofollow(&root_fd, &rel, given, flags)?,
        Err(Errno::LOOP) => return Err(refused(given, "too many levels of symlinks")),
        Err(e) => return Err(refused(given, format!("cannot open it: {e}"))),
    };
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| refused(given, format!("cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(refused(given, "it is not a regular file"));
    }
    Ok(InputFile {
        file,
        path: root.join(&rel),
    })
}

fn open_nofollow(
    root: &OwnedFd,
    rel: &Path,
    given: &str,
    flags: OFlags,
) -> Result<OwnedFd, EncodeError> {
    let parts: Vec<_> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s),
            _ => None,
        })
        .collect();
    let Some((last, dirs)) = parts.split_last() else {
        return Err(refused(given, "it names no file"));
    };
    let mut cur: Option<OwnedFd> = None;
    for d in dirs {
        let at = cur.as_ref().map_or(root.as_fd(), |f| f.as_fd());
        let next = rustix::fs::openat(
            at,
            *d,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => refused(
                given,
                "it passes through a symlink (refused on this kernel, which lacks openat2)",
            ),
            e => refused(given, format!("cannot open it: {e}")),
        })?;
        cur = Some(next);
    }
    let at = cur.as_ref().map_or(root.as_fd(), |f| f.as_fd());
    rustix::fs::openat(at, *last, flags | OFlags::NOFOLLOW, Mode::empty()).map_err(|e| match e {
        Errno::LOOP => refused(
            given,
            "it is a symlink (refused on this kernel, which lacks openat2)",
        ),
        e => refused(given, format!("cannot open it: {e}")),
    })
}

/// What is at an output name now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Nothing: the name is free.
    Free,
    /// An output this job published in an earlier attempt: it may be replaced.
    Own,
}

/// The directory an output goes into, reached without following a symlink,
/// and the name it takes there.
#[derive(Debug)]
pub struct OutputTarget {
    /// The output's directory; every later operation is relative to it.
    dir: OwnedFd,
    /// The last component of the output name (a file stem or an HLS
    /// directory).
    name: String,
    /// `root/<output name>` as a path, for results and messages.
    display: PathBuf,
    /// The output name as the job gave it.
    given: String,
}

/// Opens (creating what is missing) the directory of an output name under
/// `root`. Every existing component is checked before anything is created,
/// and none may be a symlink.
pub fn open_output(root: &Path, given: &str) -> Result<OutputTarget, EncodeError> {
    let parts = check_output_name(given)?;
    let root_fd = open_root(root, given, "output")?;
    let Some((name, dirs)) = parts.split_last() else {
        return Err(refused(given, "it names no file"));
    };
    let open_dir = |at: &OwnedFd, c: &str| {
        rustix::fs::openat(
            at,
            c,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let mut cur = root_fd;
    let mut missing = dirs.len();
    for (i, c) in dirs.iter().enumerate() {
        match open_dir(&cur, c) {
            Ok(fd) => cur = fd,
            Err(Errno::NOENT) => {
                missing = i;
                break;
            }
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err(refused(
                    given,
                    format!(
                        "{:?} is a symlink or not a directory; outputs never pass through symlinks",
                        dirs[..=i].join("/")
                    ),
                ));
            }
            Err(e) => return Err(io_error(given, "cannot open its directory", e)),
        }
    }
    for c in &dirs[missing..] {
        match rustix::fs::mkdirat(&cur, *c, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(io_error(given, "cannot create its directory", e)),
        }
        cur = open_dir(&cur, c).map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => refused(
                given,
                format!("{c:?} was replaced by a symlink while it was being created"),
            ),
            e => io_error(given, "cannot open its directory", e),
        })?;
    }
    let canonical = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    Ok(OutputTarget {
        dir: cur,
        name: (*name).to_owned(),
        display: parts.iter().fold(canonical, |p, c| p.join(c)),
        given: given.to_owned(),
    })
}

impl OutputTarget {
    /// The last component of the output name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `root/<output name>`.
    pub fn display(&self) -> &Path {
        &self.display
    }

    /// The path of `name` in the output's directory, as shown in results.
    pub(crate) fn display_of(&self, name: &str) -> PathBuf {
        self.display.with_file_name(name)
    }

    /// What is at `name` in the output's directory, for a job whose id is
    /// `owner`. Anything not published by the same job is an error naming it.
    pub(crate) fn existing(
        &self,
        name: &str,
        dir: bool,
        owner: Option<&str>,
    ) -> Result<Existing, EncodeError> {
        let shown = self.display_of(name).display().to_string();
        let st = match rustix::fs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => return Ok(Existing::Free),
            Err(e) => return Err(io_error(&shown, "cannot inspect the output", e)),
            Ok(st) => st,
        };
        let kind = FileType::from_raw_mode(st.st_mode);
        let exists = |why: &str| EncodeError::OutputExists {
            path: shown.clone(),
            reason: why.to_owned(),
        };
        let expected = if dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        };
        if kind != expected {
            return Err(exists(&format!(
                "it is a {} that this job did not write",
                kind_name(kind)
            )));
        }
        let Some(owner) = owner else {
            return Err(exists("it was not written by this job"));
        };
        let marker = if dir {
            rustix::fs::openat(
                &self.dir,
                name,
                OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()
            .and_then(|d| read_marker(&d, OWNER_MARKER))
        } else {
            read_marker(&self.dir, &file_marker(name))
        };
        match marker {
            Some(m) if m == owner => Ok(Existing::Own),
            Some(m) => Err(exists(&format!("job {m} wrote it"))),
            None => Err(exists("it was not written by spool")),
        }
    }
}

fn kind_name(k: FileType) -> &'static str {
    match k {
        FileType::RegularFile => "file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        _ => "special file",
    }
}

/// The marker beside a published MP4.
fn file_marker(name: &str) -> String {
    format!(".{name}.spool-owner")
}

fn read_marker(dir: &impl AsFd, name: &str) -> Option<String> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut s = String::new();
    File::from(fd).take(256).read_to_string(&mut s).ok()?;
    Some(s.trim().to_owned())
}

/// A directory a job writes into before anything is published: created by
/// this process under a random hidden name beside the output, removed on drop
/// unless published.
#[derive(Debug)]
pub(crate) struct Staging<'t> {
    target: &'t OutputTarget,
    /// `.spool-partial-<uuid>` in the output's directory.
    name: String,
    /// The staging directory itself.
    dir: OwnedFd,
    /// Subdirectories created in it (HLS renditions), kept open so their
    /// `/proc/self/fd` paths stay valid.
    subdirs: Vec<OwnedFd>,
    /// Set once the contents were moved to their final names.
    published: bool,
}

impl<'t> Staging<'t> {
    /// Creates the staging directory beside the output.
    pub(crate) fn new(target: &'t OutputTarget) -> Result<Self, EncodeError> {
        let name = format!("{STAGING_PREFIX}{}", uuid::Uuid::new_v4().simple());
        rustix::fs::mkdirat(&target.dir, &name, Mode::from_raw_mode(DIR_MODE))
            .map_err(|e| io_error(&target.given, "cannot create a staging directory", e))?;
        let dir = rustix::fs::openat(
            &target.dir,
            &name,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let dir = match dir {
            Ok(d) => d,
            Err(e) => {
                let _ = rustix::fs::unlinkat(&target.dir, &name, AtFlags::REMOVEDIR);
                return Err(io_error(
                    &target.given,
                    "cannot open the staging directory",
                    e,
                ));
            }
        };
        Ok(Staging {
            target,
            name,
            dir,
            subdirs: Vec::new(),
            published: false,
        })
    }

    /// The path FFmpeg is given for `file` in the staging directory.
    pub(crate) fn path(&self, file: &str) -> String {
        fd_path(&self.dir, file)
    }

    /// Creates a subdirectory (an HLS rendition) and returns the path of its
    /// directory for FFmpeg (`/proc/self/fd/N`).
    pub(crate) fn subdir(&mut self, name: &str) -> Result<String, EncodeError> {
        rustix::fs::mkdirat(&self.dir, name, Mode::from_raw_mode(DIR_MODE))
            .map_err(|e| io_error(&self.target.given, "cannot create a rendition directory", e))?;
        let fd = rustix::fs::openat(
            &self.dir,
            name,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error(&self.target.given, "cannot open a rendition directory", e))?;
        let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
        self.subdirs.push(fd);
        Ok(p)
    }

    /// Writes a small file of spool's own (a master playlist, a marker).
    pub(crate) fn write(&self, file: &str, contents: &[u8]) -> Result<(), EncodeError> {
        let fd = rustix::fs::openat(
            &self.dir,
            file,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| io_error(&self.target.given, &format!("cannot write {file}"), e))?;
        use std::io::Write;
        File::from(fd)
            .write_all(contents)
            .map_err(|e| EncodeError::Failed(format!("writing {file}: {e}")))
    }

    /// Publishes the staging directory itself as the output directory `name`
    /// (HLS). `owner` goes in the marker; an earlier attempt's directory is
    /// swapped out atomically and removed.
    pub(crate) fn publish_dir(mut self, owner: Option<&str>) -> Result<PathBuf, EncodeError> {
        let t = self.target;
        let state = t.existing(&t.name, true, owner)?;
        if let Some(o) = owner {
            self.write(OWNER_MARKER, o.as_bytes())?;
        }
        match state {
            Existing::Free => rename_noreplace(&t.dir, &self.name, &t.name)
                .map_err(|e| publish_error(t, &t.name, e))?,
            Existing::Own => {
                rustix::fs::renameat_with(
                    &t.dir,
                    &self.name,
                    &t.dir,
                    &t.name,
                    RenameFlags::EXCHANGE,
                )
                .map_err(|e| io_error(&t.given, "cannot replace the earlier output", e))?;
                // The staging name now holds the earlier attempt's tree; the
                // drop guard removes it.
                self.published = false;
                let out = t.display_of(&t.name);
                drop(self);
                return Ok(out);
            }
        }
        self.published = true;
        Ok(t.display_of(&t.name))
    }

    /// Publishes the staged file `file` as `name` in the output's directory
    /// (MP4), with its ownership marker first.
    pub(crate) fn publish_file(
        &self,
        file: &str,
        name: &str,
        owner: Option<&str>,
    ) -> Result<PathBuf, EncodeError> {
        let t = self.target;
        let state = t.existing(name, false, owner)?;
        if let Some(o) = owner {
            let tmp = format!("{file}.owner");
            self.write(&tmp, o.as_bytes())?;
            rustix::fs::renameat(&self.dir, &tmp, &t.dir, file_marker(name))
                .map_err(|e| io_error(&t.given, "cannot write the ownership marker", e))?;
        }
        match state {
            Existing::Free => rename_noreplace_between(&self.dir, file, &t.dir, name)
                .map_err(|e| publish_error(t, name, e))?,
            Existing::Own => rustix::fs::renameat(&self.dir, file, &t.dir, name)
                .map_err(|e| io_error(&t.given, "cannot replace the earlier output", e))?,
        }
        Ok(t.display_of(name))
    }

    /// Marks the staging directory's job as done: it is removed on drop (MP4:
    /// its files were moved out).
    pub(crate) fn finish(self) {}
}

fn publish_error(t: &OutputTarget, name: &str, e: Errno) -> EncodeError {
    if e == Errno::EXIST || e == Errno::NOTEMPTY {
        EncodeError::OutputExists {
            path: t.display_of(name).display().to_string(),
            reason: "something else appeared there while the job ran".into(),
        }
    } else {
        io_error(&t.given, "cannot publish the output", e)
    }
}

fn rename_noreplace(dir: &OwnedFd, from: &str, to: &str) -> Result<(), Errno> {
    rename_noreplace_between(dir, from, dir, to)
}

/// `renameat2(RENAME_NOREPLACE)`; on a filesystem without it, `linkat` (which
/// never replaces) and unlink for files, and a plain rename for directories
/// (which cannot replace a non-empty directory).
fn rename_noreplace_between(
    from_dir: &OwnedFd,
    from: &str,
    to_dir: &OwnedFd,
    to: &str,
) -> Result<(), Errno> {
    match rustix::fs::renameat_with(from_dir, from, to_dir, to, RenameFlags::NOREPLACE) {
        Err(Errno::INVAL | Errno::NOSYS) => {
            let st = rustix::fs::statat(from_dir, from, AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                if rustix::fs::statat(to_dir, to, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                    return Err(Errno::EXIST);
                }
                rustix::fs::renameat(from_dir, from, to_dir, to)
            } else {
                rustix::fs::linkat(from_dir, from, to_dir, to, AtFlags::empty())?;
                rustix::fs::unlinkat(from_dir, from, AtFlags::empty())
            }
        }
        other => other,
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        // remove_dir_all never follows symlinks inside the tree; the path is
        // pinned to the output's directory by its descriptor.
        let _ = std::fs::remove_dir_all(fd_path(&self.target.dir, &self.name));
    }
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
