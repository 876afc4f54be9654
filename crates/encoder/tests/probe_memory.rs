//! Memory while an input is probed, before any limit could be checked on a
//! decoded frame: a 1 KB MOV whose PNG track declares 16000x16000 16-bit
//! RGBA made FFmpeg's probing decoder allocate 2 GB (about 2 GB more per
//! track), so a tiny upload could OOM-kill a worker and every job on it.
//! Alone in its file: the peak RSS measured is this test's process's.

mod common;

use anyhow::{Context, Result, ensure};
use common::{encoder, roots, spec};
use spool_encoder::{CancellationToken, EncodeError, Limits, OutputOwner};

/// This process's peak resident memory, bytes (`VmHWM`).
fn peak_rss() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

/// Replaces every `at`-relative big-endian field after each `marker`.
fn patch(bytes: &mut [u8], marker: &[u8], at: usize, value: &[u8]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while let Some(p) = bytes[i..].windows(marker.len()).position(|w| w == marker) {
        let start = i + p + at;
        if start + value.len() <= bytes.len() {
            bytes[start..start + value.len()].copy_from_slice(value);
            n += 1;
        }
        i += p + marker.len();
    }
    n
}

#[test]
fn a_header_declaring_a_huge_image_is_refused_before_probing_allocates() -> Result<()> {
    let r = roots()?;
    let enc = encoder(&r, Limits::default())?;
    for tracks in [1usize, 3] {
        let small = r.dir.path().join(format!("small{tracks}.mov"));
        let mut args: Vec<String> = Vec::new();
        for c in ["red", "green", "blue"].iter().take(tracks) {
            args.extend(["-f".into(), "lavfi".into(), "-i".into()]);
            args.push(format!("color=c={c}:size=64x64:rate=1:duration=1"));
        }
        for t in 0..tracks {
            args.extend(["-map".into(), format!("{t}:v")]);
        }
        for a in [
            "-c:v",
            "png",
            "-pix_fmt",
            "rgba64be",
            "-movflags",
            "+faststart",
        ] {
            args.push(a.into());
        }
        args.push(small.to_string_lossy().into_owned());
        spool_testkit::ffmpeg(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        let mut bytes = std::fs::read(&small)?;
        // The PNG header (IHDR: width, height) and the sample entry
        // (width, height 28 bytes after the `png ` type) say 16000x16000.
        let big = 16000u32;
        ensure!(patch(&mut bytes, b"IHDR", 4, &big.to_be_bytes()) >= tracks);
        patch(&mut bytes, b"IHDR", 8, &big.to_be_bytes());
        ensure!(patch(&mut bytes, b"png ", 28, &(big as u16).to_be_bytes()) >= tracks);
        patch(&mut bytes, b"png ", 30, &(big as u16).to_be_bytes());
        // The image data cut short (the index is at the front).
        bytes.truncate(bytes.len() - 64);
        let name = format!("huge{tracks}.mov");
        std::fs::write(r.input.join(&name), &bytes)?;
        let s = spec(&format!(
            r#"{{"input":{name:?},"output":"o{tracks}","hardware":"cpu",
                "renditions":[{{"codec":"h264","height":120,"preset":"fastest"}}]}}"#
        ))?;
        let e = enc
            .encode_as_blocking(
                Some(&OutputOwner::named("j")),
                &s,
                &mut |_| {},
                &CancellationToken::new(),
            )
            .err()
            .context("a 16000x16000 image must be refused")?;
        ensure!(!e.is_retryable(), "{e}");
        ensure!(
            matches!(
                e,
                EncodeError::LimitExceeded { .. } | EncodeError::BadInput { .. }
            ),
            "{e}"
        );
        let peak = peak_rss()?;
        eprintln!(
            "{tracks} track(s), {} bytes: refused with peak RSS {} MiB ({e})",
            bytes.len(),
            peak >> 20
        );
        ensure!(
            peak < 400 << 20,
            "probing took {} MiB before the refusal",
            peak >> 20
        );
    }
    Ok(())
}

/// A video stream of a codec spool does not decode (PNG) is refused by
/// name, before any decoder opens.
#[test]
fn an_image_codec_track_is_refused_by_name() -> Result<()> {
    let r = roots()?;
    let enc = encoder(&r, Limits::default())?;
    spool_testkit::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=red:size=64x64:rate=5:duration=1",
        "-c:v",
        "png",
        &r.input.join("png.mov").to_string_lossy(),
    ])?;
    let s = spec(
        r#"{"input":"png.mov","output":"o","hardware":"cpu",
            "renditions":[{"codec":"h264","height":64,"preset":"fastest"}]}"#,
    )?;
    let e = enc
        .encode_as_blocking(None, &s, &mut |_| {}, &CancellationToken::new())
        .err()
        .context("a PNG track must be refused")?;
    ensure!(
        matches!(e, EncodeError::BadInput { .. }) && e.to_string().contains("png"),
        "{e}"
    );
    Ok(())
}
