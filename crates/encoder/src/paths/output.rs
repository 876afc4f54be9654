//! Outputs: the output's directory reached without symlinks, a staging
//! directory of spool's own, and publishing that never replaces what the job
//! did not write (ownership markers, `renameat2`).

use super::*;
use spool_storage::{OutputOwner, Writer};

/// A file [`Staging::publish_files`] published, to take back if a later
/// one fails.
#[derive(Debug)]
struct Published {
    file: String,
    name: String,
    /// An earlier attempt's file was swapped into the staging directory.
    swapped: bool,
    earlier_marker: Option<String>,
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
    /// Removes what the output's name names, and everything under it,
    /// through its directory's descriptor (`remove_dir_all` never follows a
    /// symlink inside the tree); nothing when it is gone.
    pub(crate) fn remove_tree(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(fd_path(&self.dir, &self.name)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

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

    /// What is at `name` in the output's directory, for the attempt
    /// `owner`. Anything not published by an earlier attempt of the same
    /// job is an error naming it.
    pub(crate) fn existing(
        &self,
        name: &str,
        dir: bool,
        owner: Option<&OutputOwner>,
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
        let writer = match marker {
            Some(m) => Writer::of_marker(&m, Some(owner)),
            None => Writer::Unknown,
        };
        if writer.replaceable_by(owner) {
            Ok(Existing::Own)
        } else {
            Err(exists(&writer.refusal()))
        }
    }
}

pub(super) fn kind_name(k: FileType) -> &'static str {
    match k {
        FileType::RegularFile => "file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        _ => "special file",
    }
}

/// The marker beside a published MP4.
pub(super) fn file_marker(name: &str) -> String {
    format!(".{name}.spool-owner")
}

pub(super) fn read_marker(dir: &impl AsFd, name: &str) -> Option<String> {
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
    pub(crate) fn publish_dir(
        mut self,
        owner: Option<&OutputOwner>,
    ) -> Result<PathBuf, EncodeError> {
        let t = self.target;
        let state = t.existing(&t.name, true, owner)?;
        if let Some(o) = owner {
            self.write(OWNER_MARKER, o.marker().as_bytes())?;
        }
        match state {
            Existing::Free => {
                rename_noreplace(&t.dir, &self.name, &t.name)
                    .map_err(|e| publish_error(t, &t.name, e))?;
                self.published = true;
            }
            // Swapped atomically: the staging name now holds the earlier
            // attempt's tree, which the drop guard removes.
            Existing::Own => rustix::fs::renameat_with(
                &t.dir,
                &self.name,
                &t.dir,
                &t.name,
                RenameFlags::EXCHANGE,
            )
            .map_err(|e| io_error(&t.given, "cannot replace the earlier output", e))?,
        }
        Ok(t.display_of(&t.name))
    }

    /// Publishes the staged files (`(staged name, final name)`) in the
    /// output's directory (MP4s) as one unit: every name is checked first,
    /// and if any cannot be published, the ones this call already published
    /// are taken back (an earlier attempt's file it replaced is put back).
    pub(crate) fn publish_files(
        &self,
        files: &[(&str, &str)],
        owner: Option<&OutputOwner>,
    ) -> Result<Vec<PathBuf>, EncodeError> {
        let t = self.target;
        let states = files
            .iter()
            .map(|(_, name)| t.existing(name, false, owner))
            .collect::<Result<Vec<_>, _>>()?;
        let mut done: Vec<Published> = Vec::new();
        for ((file, name), state) in files.iter().zip(states) {
            match self.publish_one(file, name, state, owner) {
                Ok(p) => done.push(p),
                Err(e) => {
                    for p in done.iter().rev() {
                        self.take_back(p, owner);
                    }
                    return Err(e);
                }
            }
        }
        Ok(files.iter().map(|(_, name)| t.display_of(name)).collect())
    }

    /// Publishes one staged file with its marker. The marker goes first and
    /// never replaces another job's: of two jobs racing for a free name,
    /// the one whose marker lands wins, and the other stops before its
    /// file is moved.
    fn publish_one(
        &self,
        file: &str,
        name: &str,
        state: Existing,
        owner: Option<&OutputOwner>,
    ) -> Result<Published, EncodeError> {
        let t = self.target;
        let marker = file_marker(name);
        let mut earlier_marker = None;
        if let Some(o) = owner {
            let tmp = format!("{file}.owner");
            self.write(&tmp, o.marker().as_bytes())?;
            let placed = match state {
                Existing::Free => rename_noreplace_between(&self.dir, &tmp, &t.dir, &marker),
                Existing::Own => {
                    earlier_marker = read_marker(&t.dir, &marker);
                    rustix::fs::renameat(&self.dir, &tmp, &t.dir, &marker)
                }
            };
            match placed {
                Ok(()) => {}
                // A marker without its file: an attempt that died between
                // the two renames. Its own job's may be replaced.
                Err(Errno::EXIST) => {
                    let stale = read_marker(&t.dir, &marker)
                        .map(|m| Writer::of_marker(&m, Some(o)))
                        .unwrap_or(Writer::Unknown);
                    if !stale.replaceable_by(o) {
                        let _ = rustix::fs::unlinkat(&self.dir, &tmp, AtFlags::empty());
                        return Err(EncodeError::OutputExists {
                            path: t.display_of(name).display().to_string(),
                            reason: format!("another job is publishing it ({})", stale.refusal()),
                        });
                    }
                    rustix::fs::renameat(&self.dir, &tmp, &t.dir, &marker)
                        .map_err(|e| io_error(&t.given, "cannot write the ownership marker", e))?;
                }
                Err(e) => return Err(io_error(&t.given, "cannot write the ownership marker", e)),
            }
        }
        let moved = match state {
            Existing::Free => rename_noreplace_between(&self.dir, file, &t.dir, name),
            // Swapped, so the earlier attempt's file waits in the staging
            // directory until this publish is complete (or is put back).
            Existing::Own => {
                match rustix::fs::renameat_with(
                    &self.dir,
                    file,
                    &t.dir,
                    name,
                    RenameFlags::EXCHANGE,
                ) {
                    Err(Errno::NOENT) => rename_noreplace_between(&self.dir, file, &t.dir, name),
                    other => other,
                }
            }
        };
        let swapped = state == Existing::Own && self.exists_here(file);
        match moved {
            Ok(()) => Ok(Published {
                file: file.to_owned(),
                name: name.to_owned(),
                swapped,
                earlier_marker,
            }),
            Err(e) => {
                // Only the marker this call placed is removed.
                if let Some(o) = owner
                    && read_marker(&t.dir, &marker).as_deref() == Some(o.marker().as_str())
                {
                    match &earlier_marker {
                        Some(m) => {
                            let _ = self.restore_marker(&marker, m);
                        }
                        None => {
                            let _ = rustix::fs::unlinkat(&t.dir, &marker, AtFlags::empty());
                        }
                    }
                }
                Err(publish_error(t, name, e))
            }
        }
    }

    fn exists_here(&self, file: &str) -> bool {
        rustix::fs::statat(&self.dir, file, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    fn restore_marker(&self, marker: &str, text: &str) -> Result<(), EncodeError> {
        let tmp = format!("{marker}.restore");
        self.write(&tmp, text.as_bytes())?;
        rustix::fs::renameat(&self.dir, &tmp, &self.target.dir, marker)
            .map_err(|e| io_error(&self.target.given, "cannot restore a marker", e))
    }

    /// Undoes [`Staging::publish_one`], as far as the files are still ours.
    fn take_back(&self, p: &Published, owner: Option<&OutputOwner>) {
        let t = self.target;
        let marker = file_marker(&p.name);
        let ours = owner
            .is_some_and(|o| read_marker(&t.dir, &marker).as_deref() == Some(o.marker().as_str()));
        if owner.is_some() && !ours {
            return;
        }
        if p.swapped {
            let _ = rustix::fs::renameat_with(
                &self.dir,
                &p.file,
                &t.dir,
                &p.name,
                RenameFlags::EXCHANGE,
            );
        } else {
            let _ = rustix::fs::unlinkat(&t.dir, &p.name, AtFlags::empty());
        }
        match &p.earlier_marker {
            Some(m) => {
                let _ = self.restore_marker(&marker, m);
            }
            None if ours => {
                let _ = rustix::fs::unlinkat(&t.dir, &marker, AtFlags::empty());
            }
            None => {}
        }
    }

    /// Marks the staging directory's job as done: it is removed on drop (MP4:
    /// its files were moved out).
    pub(crate) fn finish(self) {}
}

pub(super) fn publish_error(t: &OutputTarget, name: &str, e: Errno) -> EncodeError {
    if e == Errno::EXIST || e == Errno::NOTEMPTY {
        EncodeError::OutputExists {
            path: t.display_of(name).display().to_string(),
            reason: "something else appeared there while the job ran".into(),
        }
    } else {
        io_error(&t.given, "cannot publish the output", e)
    }
}

pub(super) fn rename_noreplace(dir: &OwnedFd, from: &str, to: &str) -> Result<(), Errno> {
    rename_noreplace_between(dir, from, dir, to)
}

/// `renameat2(RENAME_NOREPLACE)`; on a filesystem without it, `linkat` (which
/// never replaces) and unlink for files, and a plain rename for directories
/// (which cannot replace a non-empty directory).
pub(super) fn rename_noreplace_between(
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
