//! Path confinement: inputs only under the input root, outputs only under the
//! output root. `..` components are refused outright; symlinks are resolved and
//! must still land inside the root.

use std::path::{Component, Path, PathBuf};

use crate::error::EncodeError;

fn refused(path: &str, reason: impl Into<String>) -> EncodeError {
    EncodeError::PathRefused {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn check_components(given: &str) -> Result<&Path, EncodeError> {
    let p = Path::new(given);
    if given.contains('\0') {
        return Err(refused(given, "contains a NUL byte"));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(refused(given, "`..` is not allowed"));
    }
    Ok(p)
}

/// Resolves an input path inside `root`: it must exist, be a regular file, and
/// (after following symlinks) stay inside the root.
pub fn resolve_input(root: &Path, given: &str) -> Result<PathBuf, EncodeError> {
    let p = check_components(given)?;
    let root = root.canonicalize().map_err(|e| {
        refused(
            given,
            format!("the input root {} is unusable: {e}", root.display()),
        )
    })?;
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    };
    let real = joined
        .canonicalize()
        .map_err(|e| refused(given, format!("cannot open it: {e}")))?;
    if !real.starts_with(&root) {
        return Err(refused(
            given,
            "it resolves outside the input root (symlink or absolute path)",
        ));
    }
    if !real.is_file() {
        return Err(refused(given, "it is not a regular file"));
    }
    Ok(real)
}

/// Resolves an output path inside `root`, creating its parent directories.
/// The target itself need not exist; its parent, once created, must resolve
/// inside the root.
pub fn resolve_output(root: &Path, given: &str) -> Result<PathBuf, EncodeError> {
    let p = check_components(given)?;
    if p.is_absolute() {
        return Err(refused(
            given,
            "output names are relative to the output root",
        ));
    }
    let root = root.canonicalize().map_err(|e| {
        refused(
            given,
            format!("the output root {} is unusable: {e}", root.display()),
        )
    })?;
    let joined = root.join(p);
    let name = joined
        .file_name()
        .ok_or_else(|| refused(given, "it names no file"))?
        .to_owned();
    let parent = joined.parent().unwrap_or(&root);
    std::fs::create_dir_all(parent)
        .map_err(|e| refused(given, format!("cannot create its directory: {e}")))?;
    let real_parent = parent
        .canonicalize()
        .map_err(|e| refused(given, format!("cannot resolve its directory: {e}")))?;
    if !real_parent.starts_with(&root) {
        return Err(refused(
            given,
            "its directory resolves outside the output root",
        ));
    }
    let target = real_parent.join(name);
    if target.is_symlink() {
        return Err(refused(given, "it is a symlink"));
    }
    Ok(target)
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
        assert!(resolve_input(&root, "ok.mp4").is_ok());
        for bad in [
            "../secret",
            "link.mp4",
            "/etc/passwd",
            "missing.mp4",
            "a/../../secret",
        ] {
            assert!(
                matches!(
                    resolve_input(&root, bad),
                    Err(EncodeError::PathRefused { .. })
                ),
                "{bad} was accepted"
            );
        }
        let out = dir.path().join("out");
        std::fs::create_dir(&out)?;
        assert!(resolve_output(&out, "x/y.mp4")?.starts_with(out.canonicalize()?));
        std::os::unix::fs::symlink(dir.path(), out.join("esc"))?;
        for bad in ["../x.mp4", "/tmp/x.mp4", "esc/x.mp4"] {
            assert!(resolve_output(&out, bad).is_err(), "{bad} was accepted");
        }
        Ok(())
    }
}
