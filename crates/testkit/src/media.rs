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

/// The source the chunked-encode tests split: `testsrc2` at 320x240 and
/// 25 fps, with a keyframe every second, and a 440 Hz tone in AAC, `secs`
/// long, in MP4. Every frame differs from the next: one frame against its
/// neighbour, encoded at CRF 23, measures at most 27 dB luma PSNR (all
/// 249 pairs of 10 s, measured), so a frame missing or repeated in an
/// output shows as a drop well below what the same frame scores.
pub fn chunk_source(path: &Path, secs: u32) -> Result<()> {
    let v = format!("testsrc2=size=320x240:rate=25:duration={secs}");
    let a = format!("sine=frequency=440:sample_rate=48000:duration={secs}");
    let out = path.to_string_lossy();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &v,
        "-f",
        "lavfi",
        "-i",
        &a,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        "-keyint_min",
        "25",
        "-sc_threshold",
        "0",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        &out,
    ])
}

fn probe_lines(args: &[&str]) -> Result<Vec<String>> {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .output()
        .map_err(|e| {
            err(format!(
                "ffprobe is needed (scripts/deps.sh installs it): {e}"
            ))
        })?;
    if !out.status.success() {
        return Err(err(format!(
            "ffprobe: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect())
}

/// Each packet of stream `sel` (`v:0`, `a:0`) of `path` in file order:
/// `(pts, dts, duration)` in the stream's time base.
pub fn packets(path: &Path, sel: &str) -> Result<Vec<(i64, i64, i64)>> {
    let file = path.to_string_lossy();
    probe_lines(&[
        "-select_streams",
        sel,
        "-show_entries",
        "packet=pts,dts,duration",
        "-of",
        "csv=p=0",
        &file,
    ])?
    .iter()
    .map(|l| {
        let f: Vec<i64> = l
            .split(',')
            .map(|v| v.trim().parse::<i64>().unwrap_or(i64::MIN))
            .collect();
        match f.as_slice() {
            [p, d, n, ..] => Ok((*p, *d, *n)),
            _ => Err(err(format!("ffprobe printed {l:?} for a packet"))),
        }
    })
    .collect()
}

/// Stream `sel`'s start time and duration in seconds, as ffprobe reads them.
pub fn stream_times(path: &Path, sel: &str) -> Result<(f64, f64)> {
    let file = path.to_string_lossy();
    let l = probe_lines(&[
        "-select_streams",
        sel,
        "-show_entries",
        "stream=start_time,duration",
        "-of",
        "csv=p=0",
        &file,
    ])?;
    let f: Vec<f64> = l
        .first()
        .map(|l| {
            l.split(',')
                .map(|v| v.trim().parse().unwrap_or(f64::NAN))
                .collect()
        })
        .unwrap_or_default();
    match f.as_slice() {
        [s, d, ..] => Ok((*s, *d)),
        _ => Err(err(format!("ffprobe printed {l:?} for stream {sel}"))),
    }
}

/// The luma PSNR of each frame of `a` against the same frame of `b`, in
/// dB (`inf` for identical frames is given as 100), from FFmpeg's `psnr`
/// filter; the frame counts must agree for the list to mean anything.
pub fn psnr_per_frame(a: &Path, b: &Path) -> Result<Vec<f64>> {
    let dir = tempfile::tempdir().map_err(|e| err(format!("a temporary directory: {e}")))?;
    let stats = dir.path().join("psnr.log");
    let filter = format!("[0:v][1:v]psnr=stats_file={}", stats.to_string_lossy());
    ffmpeg(&[
        "-i",
        &a.to_string_lossy(),
        "-i",
        &b.to_string_lossy(),
        "-lavfi",
        &filter,
        "-f",
        "null",
        "-",
    ])?;
    let text =
        std::fs::read_to_string(&stats).map_err(|e| err(format!("{}: {e}", stats.display())))?;
    text.lines()
        .map(|l| {
            let v = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("psnr_y:"))
                .ok_or_else(|| err(format!("no psnr_y in {l:?}")))?;
            Ok(if v == "inf" {
                100.0
            } else {
                v.parse().map_err(|e| err(format!("{v:?}: {e}")))?
            })
        })
        .collect()
}

/// The MD5 of each packet of stream `sel` (FFmpeg's `framemd5` muxer over
/// a stream copy): equal lists mean bit-identical streams.
pub fn packet_md5s(path: &Path, sel: &str) -> Result<Vec<String>> {
    let dir = tempfile::tempdir().map_err(|e| err(format!("a temporary directory: {e}")))?;
    let out = dir.path().join("md5.txt");
    let map = format!("0:{sel}");
    ffmpeg(&[
        "-i",
        &path.to_string_lossy(),
        "-map",
        &map,
        "-c",
        "copy",
        "-f",
        "framemd5",
        &out.to_string_lossy(),
    ])?;
    Ok(std::fs::read_to_string(&out)
        .map_err(|e| err(format!("{}: {e}", out.display())))?
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|h| h.trim().to_owned()))
        .collect())
}

/// What `ffmpeg -v error -i path -f null -` prints: empty for a file that
/// decodes cleanly.
pub fn decode_errors(path: &Path) -> Result<String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .map_err(|e| {
            err(format!(
                "ffmpeg is needed (scripts/deps.sh installs it): {e}"
            ))
        })?;
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// How many frames of stream `v:0` FFmpeg decodes and shows (frames
/// outside an MP4's edit list are not counted).
pub fn decoded_frames(path: &Path) -> Result<u64> {
    let file = path.to_string_lossy();
    let l = probe_lines(&[
        "-count_frames",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=nb_read_frames",
        "-of",
        "csv=p=0",
        &file,
    ])?;
    l.first()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| err(format!("ffprobe printed {l:?} for the frame count")))
}
