//! What a finished encode reports: file names, the HLS master playlist, and
//! each output read back as a player would see it.

use super::{EncodeError, OutputInfo, RenditionOut};
/// `<base>.mp4`, or `<base>_<label>.mp4` in a ladder.
pub(super) fn mp4_name(base: &str, label: Option<&str>) -> String {
    let stem = std::path::Path::new(base)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    match label {
        Some(l) => format!("{stem}_{l}.mp4"),
        None => format!("{stem}.mp4"),
    }
}

pub(super) fn master_playlist(
    outs: &[RenditionOut],
    specs: &[crate::Rendition],
    w: u32,
    h: u32,
) -> String {
    let labels: Vec<String> = outs.iter().map(|o| o.label.clone()).collect();
    master_playlist_of(&labels, specs, w, h)
}

/// The master playlist of renditions named `labels` (their playlists at
/// `<label>/index.m3u8`) for an input of `w`×`h`.
pub(super) fn master_playlist_of(
    labels: &[String],
    specs: &[crate::Rendition],
    w: u32,
    h: u32,
) -> String {
    let mut m = String::from("#EXTM3U\n#EXT-X-VERSION:3\n");
    for (label, r) in labels.iter().zip(specs) {
        let (rw, rh) = r.size_for(w, h);
        let bw = r.bitrate_kbps.map(|k| k as u64 * 1000).unwrap_or_else(|| {
            // Without a target, estimate from the pixels: about 0.1 bit a pixel
            // at 30 fps, the usual quality-mode ballpark for H.264.
            rw as u64 * rh as u64 * 3
        });
        m.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={bw},RESOLUTION={rw}x{rh}\n{label}/index.m3u8\n"
        ));
    }
    m
}

/// Reads an output back with the library: what a player would see.
pub(super) fn describe(
    o: &RenditionOut,
    facts: super::verify::Facts,
) -> Result<OutputInfo, EncodeError> {
    // What was encoded and what the check before publishing read: the
    // published files are not opened again (by FFmpeg's demuxers or at all).
    let duration_s = facts.duration_s;
    Ok(OutputInfo {
        rendition: o.label.clone(),
        path: o.final_path.to_string_lossy().into_owned(),
        size_bytes: facts.size_bytes,
        duration_s,
        codec: o.encoder.id().name().to_owned(),
        width: o.encoder.width(),
        height: o.encoder.height(),
        bitrate_bps: if duration_s > 0.0 {
            (facts.size_bytes as f64 * 8.0 / duration_s) as u64
        } else {
            0
        },
        encoder: o.encoder_name.to_owned(),
        frames: o.frames,
    })
}
