//! What a finished encode reports: file names, the HLS master playlist, and
//! each output read back as a player would see it.

use super::*;

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
    specs: &[crate::spec::Rendition],
    w: u32,
    h: u32,
) -> String {
    let mut m = String::from("#EXTM3U\n#EXT-X-VERSION:3\n");
    for (o, r) in outs.iter().zip(specs) {
        let (rw, rh) = r.size_for(w, h);
        let bw = r.bitrate_kbps.map(|k| k as u64 * 1000).unwrap_or_else(|| {
            // Without a target, estimate from the pixels: about 0.1 bit a pixel
            // at 30 fps, the usual quality-mode ballpark for H.264.
            rw as u64 * rh as u64 * 3
        });
        m.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={bw},RESOLUTION={rw}x{rh}\n{}/index.m3u8\n",
            o.label
        ));
    }
    m
}

/// Reads an output back with the library: what a player would see.
pub(super) fn describe(o: &RenditionOut, hls: bool) -> Result<OutputInfo, EncodeError> {
    let path = &o.final_path;
    let ictx =
        format::input(path).map_err(|e| failed(format!("reading back {}", path.display()), e))?;
    let duration_s = if ictx.duration() > 0 {
        ictx.duration() as f64 / f64::from(ff::ffi::AV_TIME_BASE)
    } else {
        0.0
    };
    let v = ictx
        .streams()
        .best(media::Type::Video)
        .ok_or_else(|| EncodeError::Failed(format!("{} has no video", path.display())))?;
    let par = v.parameters();
    let dec = codec::context::Context::from_parameters(par)
        .and_then(|c| c.decoder().video())
        .map_err(|e| failed("reading back", e))?;
    let codec_name = dec.id().name().to_owned();
    let size_bytes = if hls {
        std::fs::read_dir(path.parent().unwrap_or(std::path::Path::new(".")))
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    } else {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    };
    Ok(OutputInfo {
        rendition: o.label.clone(),
        path: path.clone(),
        size_bytes,
        duration_s,
        codec: codec_name,
        width: dec.width(),
        height: dec.height(),
        bitrate_bps: if duration_s > 0.0 {
            (size_bytes as f64 * 8.0 / duration_s) as u64
        } else {
            0
        },
        encoder: o.encoder_name.to_owned(),
        frames: o.frames,
    })
}
