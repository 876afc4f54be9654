//! `spoolctl encode`: an encode job from flags, without writing JSON.

use crate::*;

#[derive(clap::Args)]
pub(crate) struct EncodeArgs {
    /// The input, relative to the worker's input root.
    pub(crate) input: String,
    /// The output name, relative to the worker's output root.
    #[arg(long)]
    pub(crate) out: String,
    /// h264, hevc or av1.
    #[arg(long, default_value = "h264")]
    pub(crate) codec: String,
    /// Output heights; several make a ladder (`--height 1080 --height 720`).
    #[arg(long)]
    pub(crate) height: Vec<u32>,
    /// Target bitrate in kbit/s (one per height, or one for all).
    #[arg(long, conflicts_with = "quality")]
    pub(crate) bitrate: Vec<u32>,
    /// Constant quality (CRF/CQ).
    #[arg(long)]
    pub(crate) quality: Option<u32>,
    /// fastest, fast, medium, slow or slowest.
    #[arg(long, default_value = "medium")]
    pub(crate) preset: String,
    /// HLS instead of MP4 (segment length in seconds).
    #[arg(long, num_args = 0..=1, default_missing_value = "6")]
    pub(crate) hls: Option<f64>,
    /// auto, nvenc or cpu.
    #[arg(long, default_value = "auto")]
    pub(crate) hw: String,
    /// Audio: aac, copy or none.
    #[arg(long, default_value = "aac")]
    pub(crate) audio: String,
    /// Priority, -1000..=1000.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub(crate) priority: i32,
}

/// Builds the encode spec JSON from flags. The worker validates it fully; this
/// catches the obvious mistakes before anything is enqueued.
pub(crate) fn encode_spec(a: &EncodeArgs) -> Result<serde_json::Value, Failure> {
    if !["h264", "hevc", "av1"].contains(&a.codec.as_str()) {
        return Err(usage(format!(
            "invalid --codec {:?}: use h264, hevc or av1",
            a.codec
        )));
    }
    if !["auto", "nvenc", "cpu"].contains(&a.hw.as_str()) {
        return Err(usage(format!(
            "invalid --hw {:?}: use auto, nvenc or cpu",
            a.hw
        )));
    }
    if a.bitrate.len() > 1 && a.bitrate.len() != a.height.len() {
        return Err(usage("give one --bitrate, or one per --height"));
    }
    let heights: Vec<Option<u32>> = if a.height.is_empty() {
        vec![None]
    } else {
        a.height.iter().copied().map(Some).collect()
    };
    let renditions: Vec<serde_json::Value> = heights
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut r = serde_json::json!({ "codec": a.codec, "preset": a.preset });
            if let Some(h) = h {
                r["height"] = (*h).into();
            }
            if let Some(b) = a.bitrate.get(i).or(a.bitrate.first()) {
                r["bitrate_kbps"] = (*b).into();
            }
            if let Some(q) = a.quality {
                r["quality"] = q.into();
            }
            r
        })
        .collect();
    let audio = match a.audio.as_str() {
        "aac" => serde_json::json!({ "mode": "aac" }),
        "copy" => serde_json::json!({ "mode": "copy" }),
        "none" => serde_json::json!({ "mode": "none" }),
        other => {
            return Err(usage(format!(
                "invalid --audio {other:?}: use aac, copy or none"
            )));
        }
    };
    let container = match a.hls {
        Some(seg) => serde_json::json!({ "format": "hls", "segment_s": seg }),
        None => serde_json::json!({ "format": "mp4" }),
    };
    Ok(serde_json::json!({
        "input": a.input, "output": a.out, "renditions": renditions,
        "audio": audio, "container": container, "hardware": a.hw,
    }))
}
