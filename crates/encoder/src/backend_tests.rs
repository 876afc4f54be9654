//! Every encoder option spool's mapping can produce, checked against the
//! linked FFmpeg without hardware: for each codec × backend × preset × rate
//! control (× HLS or not), each option is set on an allocated, unopened
//! context of that encoder (`h264_nvenc` and `hevc_nvenc` included: setting
//! options needs no GPU). An unknown option or a refused value fails.

use crate::backend::{Backend, check_options, encoder_name, rendition_options};
use crate::{Codec, Preset, Rendition};
use anyhow::{Result, bail, ensure};

const PRESETS: [Preset; 5] = [
    Preset::Fastest,
    Preset::Fast,
    Preset::Medium,
    Preset::Slow,
    Preset::Slowest,
];

fn rendition(
    codec: Codec,
    preset: Preset,
    bitrate: Option<u32>,
    quality: Option<u32>,
) -> Rendition {
    let mut r: Rendition =
        serde_json::from_value(serde_json::json!({"codec": "h264", "height": 720}))
            .unwrap_or_else(|e| panic!("a rendition: {e}"));
    r.codec = codec;
    r.preset = preset;
    r.bitrate_kbps = bitrate;
    r.quality = quality;
    r
}

#[test]
fn every_mapped_option_is_accepted_by_the_linked_encoders() -> Result<()> {
    let mut checked = 0;
    let mut missing = std::collections::BTreeSet::new();
    for codec in [Codec::H264, Codec::Hevc, Codec::Av1] {
        for backend in [
            Backend::Cpu,
            Backend::Nvenc { gpu: 0 },
            Backend::Nvenc { gpu: 3 },
        ] {
            let name = encoder_name(codec, backend);
            for preset in PRESETS {
                for (bitrate, quality) in [
                    (Some(4000), None),
                    (None, Some(28)),
                    (None, None),
                    (Some(800), Some(30)),
                ] {
                    for hls in [false, true] {
                        let r = rendition(codec, preset, bitrate, quality);
                        let opts = rendition_options(&r, backend, hls);
                        match check_options(name, &opts) {
                            Ok(true) => checked += 1,
                            Ok(false) => {
                                missing.insert(name);
                            }
                            Err(e) => bail!("{e} (options {opts:?})"),
                        }
                    }
                }
            }
        }
    }
    println!("{checked} option sets accepted; not in this FFmpeg build: {missing:?}");
    // Debian 12's FFmpeg 5.1 has every encoder but av1_nvenc (FFmpeg 6.0+).
    for required in [
        "libx264",
        "libx265",
        "libsvtav1",
        "h264_nvenc",
        "hevc_nvenc",
    ] {
        ensure!(
            !missing.contains(required),
            "{required} is missing from the linked FFmpeg"
        );
    }
    ensure!(
        checked >= 5 * 4 * 2 * 5,
        "only {checked} combinations checked"
    );
    Ok(())
}

#[test]
fn an_unknown_option_or_a_refused_value_is_an_error_naming_it() -> Result<()> {
    let e = check_options("h264_nvenc", &[("no_such_option".into(), "1".into())])
        .err()
        .unwrap_or_default();
    ensure!(
        e.contains("no_such_option") && e.contains("no such option"),
        "{e}"
    );
    let e = check_options("h264_nvenc", &[("preset".into(), "p9".into())])
        .err()
        .unwrap_or_default();
    ensure!(e.contains("preset=p9") && e.contains("refused"), "{e}");
    let e = check_options("libx264", &[("crf".into(), "not-a-number".into())])
        .err()
        .unwrap_or_default();
    ensure!(e.contains("crf"), "{e}");
    ensure!(!check_options("no_such_encoder", &[]).map_err(anyhow::Error::msg)?);
    Ok(())
}

#[test]
fn nvenc_constant_quality_sets_no_average_bitrate_and_no_caps() -> Result<()> {
    let q = rendition_options(
        &rendition(Codec::H264, Preset::Medium, None, Some(24)),
        Backend::Nvenc { gpu: 0 },
        false,
    );
    let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    ensure!(get("cq") == Some("24") && get("b") == Some("0"), "{q:?}");
    ensure!(
        get("maxrate").is_none() && get("bufsize").is_none(),
        "{q:?}"
    );
    let b = rendition_options(
        &rendition(Codec::Hevc, Preset::Medium, Some(3000), None),
        Backend::Nvenc { gpu: 0 },
        false,
    );
    let get = |k: &str| b.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    ensure!(
        get("b").is_none() && get("maxrate") == Some("4500k"),
        "{b:?}"
    );
    ensure!(
        check_options("h264_nvenc", &q).map_err(anyhow::Error::msg)?,
        "h264_nvenc takes the CQ options"
    );
    Ok(())
}
