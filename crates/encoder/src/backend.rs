//! Encoder choice and option mapping: which FFmpeg encoder runs a rendition,
//! and the options that express the spec's preset and rate control for it.

use crate::{Codec, Preset, Rendition};

/// CPU or NVENC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Software encoders (libx264, libx265, libsvtav1).
    Cpu,
    /// NVIDIA NVENC on GPU `gpu`.
    Nvenc {
        /// NVML / CUDA device index.
        gpu: u32,
    },
}

/// The FFmpeg encoder name for a codec on a backend.
pub(crate) fn encoder_name(codec: Codec, backend: Backend) -> &'static str {
    match (codec, backend) {
        (Codec::H264, Backend::Cpu) => "libx264",
        (Codec::Hevc, Backend::Cpu) => "libx265",
        (Codec::Av1, Backend::Cpu) => "libsvtav1",
        (Codec::H264, Backend::Nvenc { .. }) => "h264_nvenc",
        (Codec::Hevc, Backend::Nvenc { .. }) => "hevc_nvenc",
        (Codec::Av1, Backend::Nvenc { .. }) => "av1_nvenc",
    }
}

/// Default quality when the spec sets neither bitrate nor quality: visually
/// good and the encoders' own default neighbourhood.
const DEFAULT_QUALITY: u32 = 23;
/// Default AV1 quality (its scale is 0-63).
const DEFAULT_AV1_QUALITY: u32 = 35;

/// Encoder options (`key=value`, as `ffmpeg -c:v X -key value`) for a rendition.
/// Bitrate targets also set `b` on the codec context (see the pipeline).
pub(crate) fn encoder_options(r: &Rendition, backend: Backend) -> Vec<(String, String)> {
    let mut o: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| o.push((k.to_owned(), v));
    let quality = r.quality.unwrap_or(if r.codec == Codec::Av1 {
        DEFAULT_AV1_QUALITY
    } else {
        DEFAULT_QUALITY
    });
    match backend {
        Backend::Nvenc { gpu } => {
            set("preset", nvenc_preset(r.preset).into());
            set("gpu", gpu.to_string());
            match r.bitrate_kbps {
                Some(kbps) => {
                    set("rc", "vbr".into());
                    set("maxrate", format!("{}k", kbps * 3 / 2));
                    set("bufsize", format!("{}k", kbps * 2));
                }
                None => {
                    // Constant quality: `cq` with no average bitrate. The
                    // NVENC encoders' defaults set `b` to 2 Mbit/s
                    // (libavcodec/nvenc_h264.c and nvenc_hevc.c, `defaults[]`:
                    // `{ "b", "2M" }`), and nvenc.c copies a non-zero
                    // `avctx->bit_rate` into `rcParams.averageBitRate`
                    // (nvenc_setup_rate_control: `if (avctx->bit_rate > 0)
                    // ctx->encode_config.rcParams.averageBitRate =
                    // avctx->bit_rate;`, FFmpeg 5.1), which would cap the
                    // "quality" encode near 2 Mbit/s. `b=0`, as `-b:v 0`
                    // does, leaves the target to `cq` alone; `maxrate` and
                    // `bufsize` are set only with a bitrate.
                    set("rc", "vbr".into());
                    set("cq", quality.to_string());
                    set("b", "0".into());
                }
            }
        }
        Backend::Cpu => match r.codec {
            Codec::H264 | Codec::Hevc => {
                set("preset", x26x_preset(r.preset).into());
                match r.bitrate_kbps {
                    Some(kbps) => {
                        set("maxrate", format!("{}k", kbps * 3 / 2));
                        set("bufsize", format!("{}k", kbps * 2));
                    }
                    None => set("crf", quality.to_string()),
                }
            }
            Codec::Av1 => {
                set("preset", svt_preset(r.preset).to_string());
                if r.bitrate_kbps.is_none() {
                    set("crf", quality.to_string());
                }
            }
        },
    }
    o
}

/// Every option a rendition's encoder is opened with: [`encoder_options`],
/// plus, for an HLS libx264 encode, no scene-cut keyframes (segments must
/// start on keyframes at regular times).
pub(crate) fn rendition_options(
    r: &Rendition,
    backend: Backend,
    hls: bool,
) -> Vec<(String, String)> {
    let mut o = encoder_options(r, backend);
    if hls && r.codec == Codec::H264 && backend == Backend::Cpu {
        o.push(("sc_threshold".into(), "0".into()));
    }
    o
}

/// Checks `options` against FFmpeg's encoder `name` as linked: each is set
/// on a freshly allocated (not opened, so no hardware is needed) context of
/// that encoder. `Ok(false)` when this FFmpeg build has no such encoder;
/// an error names the first option it does not have or whose value it
/// refuses.
pub(crate) fn check_options(name: &str, options: &[(String, String)]) -> Result<bool, String> {
    ffmpeg_next::init().map_err(|e| format!("FFmpeg did not initialise: {e}"))?;
    let Some(codec) = ffmpeg_next::encoder::find_by_name(name) else {
        return Ok(false);
    };
    let mut ctx = ffmpeg_next::codec::Context::new_with_codec(codec);
    for (k, v) in options {
        crate::ffi::set_codec_option(&mut ctx, k, v)
            .map_err(|why| format!("{name}: {k}={v}: {why}"))?;
    }
    Ok(true)
}

/// NVENC presets p1 (fastest) to p7 (best).
pub(crate) fn nvenc_preset(p: Preset) -> &'static str {
    match p {
        Preset::Fastest => "p1",
        Preset::Fast => "p3",
        Preset::Medium => "p4",
        Preset::Slow => "p6",
        Preset::Slowest => "p7",
    }
}

fn x26x_preset(p: Preset) -> &'static str {
    match p {
        Preset::Fastest => "ultrafast",
        Preset::Fast => "veryfast",
        Preset::Medium => "medium",
        Preset::Slow => "slow",
        Preset::Slowest => "veryslow",
    }
}

fn svt_preset(p: Preset) -> u32 {
    match p {
        Preset::Fastest => 12,
        Preset::Fast => 10,
        Preset::Medium => 8,
        Preset::Slow => 5,
        Preset::Slowest => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(codec: Codec, bitrate: Option<u32>, quality: Option<u32>, preset: Preset) -> Rendition {
        Rendition {
            name: None,
            codec,
            width: None,
            height: Some(720),
            bitrate_kbps: bitrate,
            quality,
            preset,
            keyframe_interval_s: None,
        }
    }

    fn get<'a>(o: &'a [(String, String)], k: &str) -> Option<&'a str> {
        o.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn nvenc_maps_presets_rate_control_and_gpu() {
        let o = encoder_options(
            &r(Codec::H264, Some(4000), None, Preset::Slow),
            Backend::Nvenc { gpu: 1 },
        );
        assert_eq!(get(&o, "preset"), Some("p6"));
        assert_eq!(get(&o, "gpu"), Some("1"));
        assert_eq!(get(&o, "rc"), Some("vbr"));
        assert_eq!(get(&o, "maxrate"), Some("6000k"));
        assert_eq!(get(&o, "bufsize"), Some("8000k"));
        let q = encoder_options(
            &r(Codec::Hevc, None, Some(28), Preset::Fastest),
            Backend::Nvenc { gpu: 0 },
        );
        assert_eq!(get(&q, "preset"), Some("p1"));
        assert_eq!(get(&q, "cq"), Some("28"));
        assert_eq!(
            encoder_name(Codec::Hevc, Backend::Nvenc { gpu: 0 }),
            "hevc_nvenc"
        );
    }

    #[test]
    fn cpu_maps_to_x264_and_svt() {
        let o = encoder_options(&r(Codec::H264, None, Some(20), Preset::Fast), Backend::Cpu);
        assert_eq!(get(&o, "preset"), Some("veryfast"));
        assert_eq!(get(&o, "crf"), Some("20"));
        let a = encoder_options(&r(Codec::Av1, None, None, Preset::Medium), Backend::Cpu);
        assert_eq!(get(&a, "preset"), Some("8"));
        assert_eq!(get(&a, "crf"), Some("35"));
        assert_eq!(encoder_name(Codec::Av1, Backend::Cpu), "libsvtav1");
    }
}

#[cfg(test)]
#[path = "backend_tests.rs"]
mod option_tests;
