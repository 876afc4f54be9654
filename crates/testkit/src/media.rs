//! Test media from FFmpeg's lavfi sources, made with the `ffmpeg` CLI.

use crate::*;

/// Writes a test clip made by the `ffmpeg` CLI from FFmpeg's lavfi sources: a
/// `testsrc2` pattern of `w`×`h` at `fps`, with a 440 Hz tone in AAC, H.264
/// in MP4 (or whatever `path`'s extension asks for).
pub fn lavfi_clip(path: &Path, w: u32, h: u32, fps: u32, secs: u32) -> Result<()> {
    run_tool(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size={w}x{h}:rate={fps}:duration={secs}"))
            .args(["-f", "lavfi", "-i"])
            .arg(format!(
                "sine=frequency=440:sample_rate=48000:duration={secs}"
            ))
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-c:a", "aac", "-shortest"])
            .arg(path),
        "scripts/deps.sh installs the ffmpeg CLI",
    )
}

/// Runs the `ffmpeg` CLI with `args` (after `-v error -y`); a failure says
/// what ffmpeg printed.
pub fn ffmpeg(args: &[&str]) -> Result<()> {
    run_tool(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y"])
            .args(args),
        "scripts/deps.sh installs the ffmpeg CLI",
    )
}

/// A video-only H.264 clip (`testsrc2`, 25 fps, `secs` long, fractions
/// allowed) in whatever container `path`'s extension (or `extra`, e.g.
/// `["-f", "h264"]`) asks for; `extra` goes before the output path.
pub fn lavfi_video(path: &Path, w: u32, h: u32, secs: f64, extra: &[&str]) -> Result<()> {
    let src = format!("testsrc2=size={w}x{h}:rate=25:duration={secs}");
    let out = path.to_string_lossy();
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        &src,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
    ];
    args.extend_from_slice(extra);
    args.push(&out);
    ffmpeg(&args)
}

/// A tmpfs mounted over a directory for a test (full-disk cases), unmounted
/// when dropped.
#[derive(Debug)]
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=`, e.g. `256k`) over
    /// `dir`; `None` where this process may not mount (not root).
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
