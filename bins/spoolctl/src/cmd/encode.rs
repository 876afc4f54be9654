//! `spoolctl encode`: an encode job from flags, without writing JSON.

use crate::*;

use spool_encode_spec::{Audio, Codec, Container, EncodeSpec, Hardware, Limits, Preset, Rendition};

/// What to do with the audio (the spec's `audio.mode`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum AudioMode {
    /// Encode to AAC, 128 kbit/s.
    Aac,
    /// Copy the input's audio stream.
    Copy,
    /// Drop audio.
    None,
}

#[derive(clap::Args)]
pub(crate) struct EncodeArgs {
    /// The input: a path relative to the worker's input root, or
    /// `s3://bucket/key` in a bucket the worker allows.
    pub(crate) input: String,
    /// The output name, relative to the worker's output root, or
    /// `s3://bucket/key` (a file for MP4, a key prefix for HLS).
    #[arg(long)]
    pub(crate) out: String,
    /// The video codec.
    #[arg(long, value_enum, default_value_t = Codec::H264)]
    pub(crate) codec: Codec,
    /// Output heights; several make a ladder (`--height 1080 --height 720`).
    #[arg(long)]
    pub(crate) height: Vec<u32>,
    /// Target bitrate in kbit/s (one per height, or one for all).
    #[arg(long, conflicts_with = "quality")]
    pub(crate) bitrate: Vec<u32>,
    /// Constant quality (CRF/CQ).
    #[arg(long)]
    pub(crate) quality: Option<u32>,
    /// Speed against quality.
    #[arg(long, value_enum, default_value_t = Preset::Medium)]
    pub(crate) preset: Preset,
    /// HLS instead of MP4 (segment length in seconds).
    #[arg(long, num_args = 0..=1, default_missing_value = "6")]
    pub(crate) hls: Option<f64>,
    /// Where to encode.
    #[arg(long, value_enum, default_value_t = Hardware::Auto)]
    pub(crate) hw: Hardware,
    /// What to do with the audio.
    #[arg(long, value_enum, default_value_t = AudioMode::Aac)]
    pub(crate) audio: AudioMode,
    /// Keep what decodes of an input that ends early.
    #[arg(long)]
    pub(crate) allow_truncated: bool,
    /// Priority, -1000..=1000.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub(crate) priority: i32,
    /// The encode's time limit (the spec's `timeout_s`: `2h`, `90s`), capped
    /// by the worker's `SPOOL_MAX_JOB_TIMEOUT`.
    #[arg(long)]
    pub(crate) timeout: Option<String>,
    /// Split the encode into chunks of about this length (`60s`, `2m`) at
    /// the input's keyframes, encoded in parallel by the queue's workers and
    /// joined (docs/encode-jobs.md, "Chunked encodes").
    #[arg(long, value_name = "LENGTH")]
    pub(crate) chunked: Option<String>,
}

/// Builds the typed encode spec from flags and validates it as the worker
/// will (with the default limits; a worker may set tighter ones), so a bad
/// spec is refused before anything is enqueued.
pub(crate) fn encode_spec(a: &EncodeArgs) -> Result<serde_json::Value, Failure> {
    if a.bitrate.len() > 1 && a.bitrate.len() != a.height.len() {
        return Err(usage("give one --bitrate, or one per --height"));
    }
    let heights: Vec<Option<u32>> = if a.height.is_empty() {
        vec![None]
    } else {
        a.height.iter().copied().map(Some).collect()
    };
    let renditions = heights
        .iter()
        .enumerate()
        .map(|(i, h)| Rendition {
            name: None,
            codec: a.codec,
            width: None,
            height: *h,
            bitrate_kbps: a.bitrate.get(i).or(a.bitrate.first()).copied(),
            quality: a.quality,
            preset: a.preset,
            keyframe_interval_s: None,
        })
        .collect();
    let spec = EncodeSpec {
        input: a.input.clone(),
        output: a.out.clone(),
        renditions,
        audio: match a.audio {
            AudioMode::Aac => Audio::default(),
            AudioMode::Copy => Audio::Copy,
            AudioMode::None => Audio::None,
        },
        container: match a.hls {
            Some(segment_s) => Container::Hls { segment_s },
            None => Container::Mp4,
        },
        hardware: a.hw,
        allow_truncated: a.allow_truncated,
        timeout_s: match &a.timeout {
            None => None,
            Some(t) => Some(
                spool_queue::parse_duration(t)
                    .map(|d| d.as_secs().clamp(1, u32::MAX.into()) as u32)
                    .ok_or_else(|| {
                        usage(format!(
                            "invalid --timeout {t:?}: use 2h, 30m, 90s or seconds"
                        ))
                    })?,
            ),
        },
        chunking: match &a.chunked {
            None => None,
            Some(t) => Some(spool_encode_spec::Chunking {
                target_s: spool_queue::parse_duration(t)
                    .map(|d| d.as_secs_f64())
                    .ok_or_else(|| {
                        usage(format!(
                            "invalid --chunked {t:?}: use a chunk length such as 60s or 2m"
                        ))
                    })?,
            }),
        },
        part: None,
    };
    spec.validate(&Limits::default())
        .map_err(|e| usage(e.to_string()))?;
    serde_json::to_value(&spec).map_err(|e| usage(format!("cannot write the spec: {e}")))
}
