//! Inputs: checked and opened in one step (`openat2(RESOLVE_BENEATH)`, or a
//! component-by-component `O_NOFOLLOW` walk), then read by FFmpeg through
//! `/proc/self/fd/N`.

use super::*;

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

pub(super) fn open_nofollow(
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
