//! Every output checked before it is published. FFmpeg's HLS muxer drops
//! the errors of segment writes (a scratch or output volume full for a
//! moment leaves 0-byte or cut segments that the playlist still lists), so
//! the files themselves are read back: an MP4 must be a complete chain of
//! boxes holding `moov` and `mdat`; each rendition playlist must be
//! complete (`#EXT-X-ENDLIST`) and name exactly the segments on disk, each
//! a whole number of 188-byte MPEG-TS packets starting with a sync byte.
//! A failure is retryable: a full disk is usually a moment.

use std::io::Read;

use super::RenditionOut;
use crate::error::EncodeError;

/// MPEG-TS packet size and sync byte.
const TS_PACKET: u64 = 188;
const TS_SYNC: u8 = 0x47;

fn bad(label: &str, what: String) -> EncodeError {
    EncodeError::Failed(format!(
        "rendition {label} did not verify before publishing: {what} (a write failed while encoding: is SPOOL_SCRATCH_DIR or the output volume full?)"
    ))
}

/// What the check read of one rendition's output: its bytes (an HLS
/// rendition's segments and playlist together) and its duration (the MP4's
/// `mvhd`, or the playlist's `#EXTINF` sum). The result reports these, so
/// nothing published is opened again (an output's name may have been
/// swapped for a symlink since).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Facts {
    pub(super) size_bytes: u64,
    pub(super) duration_s: f64,
}

/// Checks the staged outputs of every rendition (`mp4` gives each MP4's
/// staged path); returns what it read of each, in order.
pub(super) fn outputs(
    outs: &[RenditionOut],
    mp4: &dyn Fn(&RenditionOut) -> String,
) -> Result<Vec<Facts>, EncodeError> {
    outs.iter()
        .map(|o| match &o.seg_dir {
            Some(dir) => hls(&o.label, dir),
            None => mp4_file(&o.label, &mp4(o)),
        })
        .collect()
}

/// A complete MP4: top-level boxes that add up to the file, with `moov`
/// and `mdat` among them.
pub(super) fn mp4_file(label: &str, path: &str) -> Result<Facts, EncodeError> {
    let mut f =
        std::fs::File::open(path).map_err(|e| bad(label, format!("cannot reopen the MP4: {e}")))?;
    let len = f
        .metadata()
        .map_err(|e| bad(label, format!("cannot read the MP4's size: {e}")))?
        .len();
    let (mut at, mut moov, mut mdat) = (0u64, false, false);
    let mut duration_s = 0.0;
    let mut head = [0u8; 16];
    use std::io::Seek;
    while at < len {
        f.seek(std::io::SeekFrom::Start(at))
            .and_then(|_| f.read_exact(&mut head[..8]))
            .map_err(|_| bad(label, format!("the MP4 is cut at byte {at} of {len}")))?;
        let mut size = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        let kind = [head[4], head[5], head[6], head[7]];
        if size == 1 {
            f.read_exact(&mut head[8..16])
                .map_err(|_| bad(label, format!("the MP4 is cut at byte {at} of {len}")))?;
            size = u64::from_be_bytes([
                head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15],
            ]);
        } else if size == 0 {
            size = len - at;
        }
        if size < 8 || at + size > len {
            return Err(bad(
                label,
                format!("the MP4's box at byte {at} runs past its end ({len} bytes)"),
            ));
        }
        if &kind == b"moov" {
            moov = true;
            duration_s = movie_duration(&mut f, at + 8, size - 8).unwrap_or(0.0);
        }
        mdat |= &kind == b"mdat";
        at += size;
    }
    if !(moov && mdat) {
        return Err(bad(label, "the MP4 has no moov or no mdat box".into()));
    }
    Ok(Facts {
        size_bytes: len,
        duration_s,
    })
}

/// The duration in the `mvhd` box among the `len` bytes of `moov` children
/// at `at`.
fn movie_duration(f: &mut std::fs::File, at: u64, len: u64) -> Option<f64> {
    use std::io::Seek;
    let mut pos = at;
    let end = at + len;
    let mut head = [0u8; 8];
    while pos + 8 <= end {
        f.seek(std::io::SeekFrom::Start(pos)).ok()?;
        f.read_exact(&mut head).ok()?;
        let size = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        if &head[4..8] == b"mvhd" {
            let mut body = [0u8; 32];
            f.read_exact(&mut body).ok()?;
            let (scale, dur) = if body[0] == 1 {
                (
                    u32::from_be_bytes([body[20], body[21], body[22], body[23]]),
                    u64::from_be_bytes([
                        body[24], body[25], body[26], body[27], body[28], body[29], body[30],
                        body[31],
                    ]),
                )
            } else {
                (
                    u32::from_be_bytes([body[12], body[13], body[14], body[15]]),
                    u64::from(u32::from_be_bytes([body[16], body[17], body[18], body[19]])),
                )
            };
            return (scale > 0).then(|| dur as f64 / f64::from(scale));
        }
        if size < 8 {
            return None;
        }
        pos += size;
    }
    None
}

/// A complete rendition playlist naming exactly the whole segments in `dir`.
pub(super) fn hls(label: &str, dir: &str) -> Result<Facts, EncodeError> {
    let dir = std::path::Path::new(dir);
    let text = std::fs::read_to_string(dir.join("index.m3u8"))
        .map_err(|e| bad(label, format!("cannot read its playlist: {e}")))?;
    if !text.lines().any(|l| l.trim() == "#EXT-X-ENDLIST") {
        return Err(bad(
            label,
            "its playlist is incomplete (no #EXT-X-ENDLIST)".into(),
        ));
    }
    let listed: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if listed.is_empty() {
        return Err(bad(label, "its playlist lists no segment".into()));
    }
    let duration_s: f64 = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("#EXTINF:"))
        .filter_map(|v| v.split(',').next()?.trim().parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d >= 0.0)
        .sum();
    let mut size_bytes = text.len() as u64;
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| bad(label, format!("cannot list its segments: {e}")))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("seg_"))
        .collect();
    on_disk.sort();
    let mut named: Vec<String> = listed.iter().map(|s| (*s).to_owned()).collect();
    named.sort();
    if named != on_disk {
        return Err(bad(
            label,
            format!(
                "its playlist lists {} segments but {} are on disk",
                named.len(),
                on_disk.len()
            ),
        ));
    }
    for seg in listed {
        let path = dir.join(seg);
        let mut f = std::fs::File::open(&path)
            .map_err(|e| bad(label, format!("cannot reopen segment {seg}: {e}")))?;
        let size = f
            .metadata()
            .map_err(|e| bad(label, format!("cannot read segment {seg}'s size: {e}")))?
            .len();
        let mut first = [0u8; 1];
        if size == 0 || size % TS_PACKET != 0 || f.read_exact(&mut first).is_err() {
            return Err(bad(
                label,
                format!("segment {seg} is {size} bytes, not whole 188-byte MPEG-TS packets"),
            ));
        }
        if first[0] != TS_SYNC {
            return Err(bad(
                label,
                format!("segment {seg} does not start with a TS packet"),
            ));
        }
        size_bytes += size;
    }
    Ok(Facts {
        size_bytes,
        duration_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_and_empty_outputs_are_caught() -> Result<(), Box<dyn std::error::Error>> {
        let d = tempfile::tempdir()?;
        let p = d.path().join("a.mp4");
        // ftyp(16) + mdat(16) + moov(8): complete.
        let mut mp4 = Vec::new();
        for (size, kind) in [(16u32, b"ftyp"), (16, b"mdat"), (8, b"moov")] {
            mp4.extend_from_slice(&size.to_be_bytes());
            mp4.extend_from_slice(kind);
            mp4.resize(mp4.len() + size as usize - 8, 0);
        }
        std::fs::write(&p, &mp4)?;
        let ps = p.to_string_lossy().into_owned();
        assert_eq!(mp4_file("x", &ps)?.size_bytes, 40);
        std::fs::write(&p, &mp4[..30])?;
        assert!(mp4_file("x", &ps).is_err(), "a cut MP4");
        std::fs::write(&p, b"")?;
        assert!(mp4_file("x", &ps).is_err(), "an empty MP4");

        let h = d.path().join("hls");
        std::fs::create_dir(&h)?;
        let hs = h.to_string_lossy().into_owned();
        let seg = |n: usize| {
            let mut v = vec![0u8; n];
            for c in v.chunks_mut(188) {
                c[0] = TS_SYNC;
            }
            v
        };
        std::fs::write(h.join("seg_00000.ts"), seg(376))?;
        std::fs::write(h.join("seg_00001.ts"), seg(188))?;
        let pl =
            "#EXTM3U\n#EXTINF:1.0,\nseg_00000.ts\n#EXTINF:1.0,\nseg_00001.ts\n#EXT-X-ENDLIST\n";
        std::fs::write(h.join("index.m3u8"), pl)?;
        let facts = hls("x", &hs)?;
        assert!((facts.duration_s - 2.0).abs() < 1e-9, "{facts:?}");
        std::fs::write(h.join("seg_00001.ts"), b"")?;
        assert!(hls("x", &hs).is_err(), "a 0-byte segment");
        std::fs::write(h.join("seg_00001.ts"), &seg(376)[..300])?;
        assert!(hls("x", &hs).is_err(), "a cut segment");
        std::fs::remove_file(h.join("seg_00001.ts"))?;
        assert!(hls("x", &hs).is_err(), "a missing segment");
        std::fs::write(h.join("seg_00001.ts"), seg(188))?;
        std::fs::write(h.join("index.m3u8"), &pl[..pl.len() - 15])?;
        assert!(hls("x", &hs).is_err(), "an incomplete playlist");
        Ok(())
    }
}
