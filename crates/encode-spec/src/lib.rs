//! The encode job spec (JSON), documented with examples in
//! `docs/encode-jobs.md`, with a JSON Schema for producers in other languages
//! (`docs/encode-job.schema.json`, generated from these types by
//! [`json_schema`] and checked against them in CI).
//!
//! This crate links no FFmpeg: `spoolctl` and producers build and check specs
//! with it; `spool-encoder` runs them. Unknown fields and impossible values are
//! refused before any work starts, each error naming its field.
//!
//! ```
//! use spool_encode_spec::{EncodeSpec, Limits};
//! let spec = EncodeSpec::from_json(
//!     br#"{"input":"a.mov","output":"a","renditions":[{"codec":"h264","height":720}]}"#,
//!     &Limits::default(),
//! )?;
//! assert_eq!(spec.renditions[0].label(), "720p");
//! # Ok::<(), spool_encode_spec::SpecError>(())
//! ```
//!
//! Over 400 lines: this crate is one concept (the spec); its validation and
//! tests sit beside the types they check.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod s3;
pub use s3::{MAX_KEY_BYTES, S3Uri};

/// A spec that cannot run: the field, as written in the JSON, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid encode spec: `{field}` {reason}")]
pub struct SpecError {
    /// The offending field (`renditions[0].height`).
    pub field: String,
    /// Why, with what is accepted.
    pub reason: String,
}

impl SpecError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The JSON Schema of [`EncodeSpec`], pretty-printed: what
/// `docs/encode-job.schema.json` holds.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(EncodeSpec);
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

/// Longest rendition name: it becomes part of file and directory names.
pub const MAX_RENDITION_NAME: usize = 64;

/// One encode job.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncodeSpec {
    /// The input: a path relative to the input root (or an absolute path inside
    /// it), `s3://bucket/key` when the worker allows that bucket, or an
    /// http(s) URL when the worker allows them.
    pub input: String,
    /// The output name, relative to the output root, or `s3://bucket/key`
    /// when the worker allows that bucket: a file for MP4 (the rendition's
    /// name is appended for a ladder), a directory (key prefix) for HLS.
    pub output: String,
    /// One or more renditions; more than one makes a ladder from one decode.
    pub renditions: Vec<Rendition>,
    /// What to do with the audio.
    #[serde(default)]
    pub audio: Audio,
    /// The container.
    #[serde(default)]
    pub container: Container,
    /// Where to encode.
    #[serde(default)]
    pub hardware: Hardware,
    /// Keep what decodes when the input ends early (a read error, a file cut
    /// short, fewer frames than its header declares). Off by default: such an
    /// input fails the job permanently instead of "completing" with part of
    /// the video.
    #[serde(default)]
    pub allow_truncated: bool,
    /// The longest this encode may take, in seconds, counted from the job's
    /// start: past it the encode is cancelled, its partial outputs removed,
    /// and the job failed "timed out after …". The job's own `timeout` option
    /// wins over it, and the worker's `SPOOL_MAX_JOB_TIMEOUT` caps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u32>,
    /// Split the encode into chunks at the source's keyframes, each encoded
    /// by its own job (any worker of the queue), then joined without
    /// re-encoding (docs/encode-jobs.md, "Chunked encodes"). Only for
    /// inputs every worker can read: a path under the input root (a shared
    /// volume) or an `s3://` object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunking: Option<Chunking>,
    /// Set by spool's planner on the jobs it makes of a chunked encode, never
    /// by a producer: this job encodes one chunk, or joins them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<Part>,
}

/// How a chunked encode is split.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Chunking {
    /// The length of a chunk to aim for, in seconds: each boundary is the
    /// source keyframe nearest a multiple of it (with HLS, of the segment
    /// length too).
    pub target_s: f64,
}

/// Shortest and longest [`Chunking::target_s`].
pub const CHUNK_TARGET_RANGE: (f64, f64) = (2.0, 3600.0);
/// Most chunks one encode is split into.
pub const MAX_CHUNKS: u32 = 1000;

/// One job of a chunked encode, as the planner writes it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "lowercase", tag = "kind")]
pub enum Part {
    /// Encode the video frames whose timestamps lie in `start..end` (in
    /// `time_base`, counted from the input's start as outputs are) into
    /// MP4 chunk files named by the spec's `output`, without audio.
    Chunk {
        /// The chunk's index, from 0.
        index: u32,
        /// How many chunks the encode has.
        count: u32,
        /// The first frame's timestamp (a keyframe of the source).
        start: i64,
        /// The first timestamp of the next chunk; none for the last.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<i64>,
        /// The source video stream's time base, `[num, den]`.
        time_base: [i32; 2],
    },
    /// Encode the input's audio once, as the spec's `audio` says, into an
    /// MP4 file named by the spec's `output` (the join copies it), its
    /// timestamps counted from the input's start as a whole encode's are.
    Audio,
    /// Join the chunk files into the spec's outputs, stream-copying the
    /// video, and the audio: from the audio job's file when `audio` is set,
    /// else from the input (`copy`) or none.
    Join {
        /// Where the chunks are: the output name (relative to the output
        /// root) their files were written under, `<dir>/c00000.mp4` and so
        /// on (`c00000_<rendition>.mp4` for a ladder).
        dir: String,
        /// The chunks' start timestamps, in `time_base`: one per chunk.
        starts: Vec<i64>,
        /// The source video stream's time base, `[num, den]`.
        time_base: [i32; 2],
        /// Whether an audio job wrote `<dir>/audio.mp4`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        audio: bool,
        /// How far the video starts after the outputs' origin (the earlier
        /// of the input's video and audio starts), in `time_base`.
        #[serde(default, skip_serializing_if = "is_zero")]
        video_offset: i64,
    },
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Longest `timeout_s` an encode spec may ask for: 31 days, as for a job's
/// own `timeout` option.
pub const MAX_TIMEOUT_S: u32 = 31 * 86_400;

/// Video codecs.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// H.264 / AVC.
    H264,
    /// H.265 / HEVC.
    Hevc,
    /// AV1.
    Av1,
}

/// Speed against quality, mapped to each encoder's own presets.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, JsonSchema)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// The fastest the encoder offers.
    Fastest,
    /// Fast.
    Fast,
    /// The encoder's balanced default.
    #[default]
    Medium,
    /// Slow, smaller output.
    Slow,
    /// The best compression the encoder offers.
    Slowest,
}

/// One output rendition.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rendition {
    /// Short name, used in file names (`720p`); defaults to `<height>p`.
    #[serde(default)]
    pub name: Option<String>,
    /// The codec.
    pub codec: Codec,
    /// Output width; with only `height`, the width keeps the aspect ratio.
    #[serde(default)]
    pub width: Option<u32>,
    /// Output height; with only `width`, the height keeps the aspect ratio.
    #[serde(default)]
    pub height: Option<u32>,
    /// Target bitrate in kbit/s (rate control by bitrate).
    #[serde(default)]
    pub bitrate_kbps: Option<u32>,
    /// Constant quality (CRF / CQ, 0-51 for H.264/HEVC, 0-63 for AV1).
    #[serde(default)]
    pub quality: Option<u32>,
    /// Speed against quality.
    #[serde(default)]
    pub preset: Preset,
    /// Keyframe interval in seconds (default 2, which suits HLS segments).
    #[serde(default)]
    pub keyframe_interval_s: Option<f64>,
}

/// Audio handling.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "lowercase", tag = "mode")]
pub enum Audio {
    /// Copy the input's audio stream as it is.
    Copy,
    /// Encode to AAC (LC).
    Aac {
        /// Bitrate in kbit/s.
        #[serde(default = "default_audio_kbps")]
        bitrate_kbps: u32,
    },
    /// Drop audio.
    None,
}

impl Default for Audio {
    fn default() -> Self {
        Audio::Aac {
            bitrate_kbps: default_audio_kbps(),
        }
    }
}

fn default_audio_kbps() -> u32 {
    128
}

/// Output container.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "lowercase", tag = "format")]
pub enum Container {
    /// MP4 with the index first (faststart), one file per rendition.
    #[default]
    Mp4,
    /// HLS: a playlist and segments per rendition, and a master playlist.
    Hls {
        /// Target segment length in seconds.
        #[serde(default = "default_segment")]
        segment_s: f64,
    },
}

fn default_segment() -> f64 {
    6.0
}

/// Where to encode.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, JsonSchema)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Hardware {
    /// NVENC when NVML finds a GPU with encoder capacity, else the CPU.
    #[default]
    Auto,
    /// NVENC or fail.
    Nvenc,
    /// CPU encoders only.
    Cpu,
}

/// The smallest width or height the av1 encoder (SVT-AV1) takes.
pub const AV1_MIN_SIDE: u32 = 64;
/// The highest bitrate the av1 encoder (SVT-AV1) takes, kbit/s.
pub const AV1_MAX_KBPS: u32 = 100_000;

/// Bounds on what one job may ask for or feed in; each has a worker setting.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Renditions per job.
    pub max_renditions: usize,
    /// Widest and tallest frame, input or output.
    pub max_width: u32,
    /// Tallest frame.
    pub max_height: u32,
    /// Longest input, in seconds.
    pub max_duration_s: f64,
    /// Most streams an input may have.
    pub max_streams: usize,
    /// Bytes FFmpeg may read to probe the input.
    pub probe_size: u64,
    /// Most HLS segments per rendition.
    pub max_hls_segments: u64,
    /// How far a rendition may be scaled up from the input, per side
    /// (`SPOOL_MAX_UPSCALE`): a 320x240 upload asked for in 8K is cost, not
    /// quality.
    pub max_upscale: f64,
    /// The memory the CPU encoders of one job may be estimated to need, in
    /// bytes (`SPOOL_MAX_ENCODE_MEMORY`): each rendition's frame size times
    /// the frames its preset keeps in flight (see [`encode_memory`]).
    pub max_encode_memory: u64,
}

impl Limits {
    /// This value with `max_renditions` set to `v`.
    pub fn with_max_renditions(mut self, v: usize) -> Self {
        self.max_renditions = v;
        self
    }

    /// This value with `max_width` set to `v`.
    pub fn with_max_width(mut self, v: u32) -> Self {
        self.max_width = v;
        self
    }

    /// This value with `max_height` set to `v`.
    pub fn with_max_height(mut self, v: u32) -> Self {
        self.max_height = v;
        self
    }

    /// This value with `max_duration_s` set to `v`.
    pub fn with_max_duration_s(mut self, v: f64) -> Self {
        self.max_duration_s = v;
        self
    }

    /// This value with `max_streams` set to `v`.
    pub fn with_max_streams(mut self, v: usize) -> Self {
        self.max_streams = v;
        self
    }

    /// This value with `probe_size` set to `v`.
    pub fn with_probe_size(mut self, v: u64) -> Self {
        self.probe_size = v;
        self
    }

    /// This value with `max_hls_segments` set to `v`.
    pub fn with_max_hls_segments(mut self, v: u64) -> Self {
        self.max_hls_segments = v;
        self
    }

    /// This value with `max_upscale` set to `v`.
    pub fn with_max_upscale(mut self, v: f64) -> Self {
        self.max_upscale = v;
        self
    }

    /// This value with `max_encode_memory` set to `v`.
    pub fn with_max_encode_memory(mut self, v: u64) -> Self {
        self.max_encode_memory = v;
        self
    }
}

/// Frames a CPU encoder keeps in flight at `preset` (lookahead, reference
/// frames and frame threads; x264's `slowest` looks 60 frames ahead with 16
/// references): the multiplier of a rendition's frame size in
/// [`encode_memory`].
pub fn frames_in_flight(preset: Preset) -> u64 {
    match preset {
        Preset::Fastest => 8,
        Preset::Fast => 24,
        Preset::Medium => 48,
        Preset::Slow => 72,
        Preset::Slowest => 96,
    }
}

/// The memory a CPU encode of `renditions` at these output sizes is
/// estimated to need, in bytes: for each, a YUV 4:2:0 frame (1.5 bytes a
/// pixel) times [`frames_in_flight`], HEVC 1.5 times and AV1 2 times that.
/// An 8K x264 `slowest` rendition comes to 4.8 GB (6.4 GB measured).
pub fn encode_memory(renditions: &[(&Rendition, u32, u32)]) -> u64 {
    renditions
        .iter()
        .map(|(r, w, h)| {
            let frame = u64::from(*w) * u64::from(*h) * 3 / 2;
            let codec = match r.codec {
                Codec::H264 => 2,
                Codec::Hevc => 3,
                Codec::Av1 => 4,
            };
            frame * frames_in_flight(r.preset) * codec / 2
        })
        .sum()
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A ladder rarely has more than six rungs.
            max_renditions: 8,
            // 8K UHD.
            max_width: 7680,
            max_height: 4320,
            // Six hours: a feature film with margin.
            max_duration_s: 6.0 * 3600.0,
            max_streams: 16,
            // Twice the input's size per side: enough for a ladder's top
            // rung over a slightly smaller source.
            max_upscale: 2.0,
            // 8 GiB: one 8K `slowest` rendition, or a 1080p ladder of six
            // at any preset.
            max_encode_memory: 8 << 30,
            // FFmpeg's default probe size (5 MB) is enough for every sane file.
            probe_size: 5_000_000,
            max_hls_segments: 20_000,
        }
    }
}

impl EncodeSpec {
    /// Parses and validates a JSON spec.
    pub fn from_json(bytes: &[u8], limits: &Limits) -> Result<Self, SpecError> {
        let spec: EncodeSpec = serde_json::from_slice(bytes).map_err(|e| {
            let msg = e.to_string();
            let field = msg
                .split('`')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_else(|| "spec".into());
            SpecError::new(field, format!("is not accepted: {msg}"))
        })?;
        spec.validate(limits)?;
        Ok(spec)
    }

    /// Checks every value, naming the first impossible one.
    pub fn validate(&self, limits: &Limits) -> Result<(), SpecError> {
        if self.input.trim().is_empty() {
            return Err(SpecError::new("input", "is empty"));
        }
        if self.output.trim().is_empty() {
            return Err(SpecError::new("output", "is empty"));
        }
        for (field, v) in [("input", &self.input), ("output", &self.output)] {
            if S3Uri::is_s3(v) {
                S3Uri::parse(v).map_err(|reason| SpecError::new(field, reason))?;
            }
        }
        if let Some(t) = self.timeout_s
            && !(1..=MAX_TIMEOUT_S).contains(&t)
        {
            return Err(SpecError::new(
                "timeout_s",
                format!("is {t}; must be within 1..={MAX_TIMEOUT_S} seconds"),
            ));
        }
        if self.renditions.is_empty() {
            return Err(SpecError::new(
                "renditions",
                "must list at least one rendition",
            ));
        }
        if self.renditions.len() > limits.max_renditions {
            return Err(SpecError::new(
                "renditions",
                format!(
                    "has {} entries; at most {} allowed (SPOOL_MAX_RENDITIONS)",
                    self.renditions.len(),
                    limits.max_renditions
                ),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.renditions.iter().enumerate() {
            let f = |name: &str| format!("renditions[{i}].{name}");
            if r.width.is_none() && r.height.is_none() && self.renditions.len() > 1 {
                return Err(SpecError::new(f("height"), "is required in a ladder"));
            }
            for (name, v, max) in [
                ("width", r.width, limits.max_width),
                ("height", r.height, limits.max_height),
            ] {
                if let Some(v) = v
                    && (v < 16 || v > max || v % 2 != 0)
                {
                    return Err(SpecError::new(
                        f(name),
                        format!("{v} must be even and within 16..={max}"),
                    ));
                }
            }
            match (r.bitrate_kbps, r.quality) {
                (Some(_), Some(_)) => {
                    return Err(SpecError::new(
                        f("quality"),
                        "cannot be combined with bitrate_kbps",
                    ));
                }
                (Some(b), None) if !(50..=200_000).contains(&b) => {
                    return Err(SpecError::new(
                        f("bitrate_kbps"),
                        format!("{b} is outside 50..=200000"),
                    ));
                }
                (None, Some(q)) => {
                    let max = if r.codec == Codec::Av1 { 63 } else { 51 };
                    if q > max {
                        return Err(SpecError::new(
                            f("quality"),
                            format!("{q} is outside 0..={max}"),
                        ));
                    }
                }
                _ => {}
            }
            // SVT-AV1 (libsvtav1) takes frames of 64 px and more on each
            // side and at most 100 Mbit/s: refused here, not after a
            // download and a failed encoder open.
            if r.codec == Codec::Av1 {
                for (name, v) in [("width", r.width), ("height", r.height)] {
                    if let Some(v) = v
                        && v < AV1_MIN_SIDE
                    {
                        return Err(SpecError::new(
                            f(name),
                            format!("{v} is below {AV1_MIN_SIDE}, the smallest side av1 encodes"),
                        ));
                    }
                }
                if let Some(b) = r.bitrate_kbps
                    && b > AV1_MAX_KBPS
                {
                    return Err(SpecError::new(
                        f("bitrate_kbps"),
                        format!("{b} is above {AV1_MAX_KBPS}, the most av1 encodes at"),
                    ));
                }
            }
            // spool's HLS output is MPEG-TS segments, and no player plays
            // AV1 in MPEG-TS: the segments would publish but never play.
            if r.codec == Codec::Av1 && matches!(self.container, Container::Hls { .. }) {
                return Err(SpecError::new(
                    f("codec"),
                    "av1 cannot go in HLS here (spool's HLS segments are MPEG-TS, which players do not play AV1 from): use h264 or hevc for HLS, or an mp4 container for av1",
                ));
            }
            if let Some(k) = r.keyframe_interval_s
                && !(0.1..=60.0).contains(&k)
            {
                return Err(SpecError::new(
                    f("keyframe_interval_s"),
                    "must be within 0.1..=60",
                ));
            }
            let name = r.label();
            if name.len() > MAX_RENDITION_NAME {
                return Err(SpecError::new(
                    f("name"),
                    format!("is longer than {MAX_RENDITION_NAME} characters"),
                ));
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(SpecError::new(f("name"), "must be letters, digits, - or _"));
            }
            if !names.insert(name.clone()) {
                return Err(SpecError::new(f("name"), format!("{name:?} is used twice")));
            }
        }
        if let Audio::Aac { bitrate_kbps } = self.audio
            && !(16..=512).contains(&bitrate_kbps)
        {
            return Err(SpecError::new(
                "audio.bitrate_kbps",
                format!("{bitrate_kbps} is outside 16..=512"),
            ));
        }
        if let Container::Hls { segment_s } = self.container
            && !(1.0..=60.0).contains(&segment_s)
        {
            return Err(SpecError::new(
                "container.segment_s",
                "must be within 1..=60",
            ));
        }
        self.validate_chunking()
    }

    fn validate_chunking(&self) -> Result<(), SpecError> {
        if let Some(c) = self.chunking {
            let (lo, hi) = CHUNK_TARGET_RANGE;
            if !(lo..=hi).contains(&c.target_s) {
                return Err(SpecError::new(
                    "chunking.target_s",
                    format!("must be within {lo}..={hi} seconds"),
                ));
            }
            let lower = self.input.to_ascii_lowercase();
            if lower.starts_with("http://") || lower.starts_with("https://") {
                return Err(SpecError::new(
                    "chunking",
                    "needs an input every chunk's worker can seek in (a path under the input root, or an s3:// object); an http(s) input is not",
                ));
            }
            if self.part.is_some() {
                return Err(SpecError::new(
                    "part",
                    "is set by spool's planner on the jobs of a chunked encode; a spec with `chunking` has none",
                ));
            }
        }
        match &self.part {
            None => {}
            Some(Part::Chunk {
                index,
                count,
                start,
                end,
                time_base,
            }) => {
                if *count == 0 || *count > MAX_CHUNKS || index >= count {
                    return Err(SpecError::new(
                        "part.index",
                        format!(
                            "{index} of {count}: must be below count, and count within 1..={MAX_CHUNKS}"
                        ),
                    ));
                }
                if *start < 0 || end.is_some_and(|e| e <= *start) {
                    return Err(SpecError::new(
                        "part.end",
                        "must be after start, and start not negative",
                    ));
                }
                check_time_base(time_base)?;
                if self.container != Container::Mp4 || self.audio != Audio::None {
                    return Err(SpecError::new(
                        "part",
                        "a chunk is encoded to MP4 without audio (the join adds it)",
                    ));
                }
            }
            Some(Part::Audio) if self.container != Container::Mp4 || self.renditions.len() != 1 => {
                return Err(SpecError::new(
                    "part",
                    "an audio part writes one MP4 file (one rendition, mp4)",
                ));
            }
            Some(Part::Audio) => {}
            Some(Part::Join {
                dir,
                starts,
                time_base,
                video_offset,
                ..
            }) => {
                if *video_offset < 0 {
                    return Err(SpecError::new("part.video_offset", "must not be negative"));
                }
                if starts.is_empty() || starts.len() > MAX_CHUNKS as usize {
                    return Err(SpecError::new(
                        "part.starts",
                        format!("must list 1 to {MAX_CHUNKS} chunk starts, one per chunk"),
                    ));
                }
                if starts.windows(2).any(|w| w[1] <= w[0]) || starts.first().is_some_and(|s| *s < 0)
                {
                    return Err(SpecError::new(
                        "part.starts",
                        "must increase from 0 or later",
                    ));
                }
                if dir.trim().is_empty() {
                    return Err(SpecError::new("part.dir", "is empty"));
                }
                check_time_base(time_base)?;
            }
        }
        Ok(())
    }

    /// Whether this spec asks to be split into chunks (and is not itself a
    /// chunk or a join).
    pub fn is_chunked(&self) -> bool {
        self.chunking.is_some() && self.part.is_none()
    }
}

fn check_time_base(tb: &[i32; 2]) -> Result<(), SpecError> {
    if tb[0] <= 0 || tb[1] <= 0 {
        return Err(SpecError::new(
            "part.time_base",
            "must be two positive integers",
        ));
    }
    Ok(())
}

impl Rendition {
    /// The rendition's name in file names.
    pub fn label(&self) -> String {
        match (&self.name, self.height, self.width) {
            (Some(n), _, _) => n.clone(),
            (None, Some(h), _) => format!("{h}p"),
            (None, None, Some(w)) => format!("{w}w"),
            (None, None, None) => "source".into(),
        }
    }

    /// The output size for an input of `w`×`h`, keeping the aspect ratio when
    /// only one side is given, rounded to even numbers.
    pub fn size_for(&self, w: u32, h: u32) -> (u32, u32) {
        let even = |v: f64| ((v / 2.0).round() as u32 * 2).max(2);
        match (self.width, self.height) {
            (Some(tw), Some(th)) => (tw, th),
            (None, Some(th)) => (even(w as f64 * th as f64 / h.max(1) as f64), th),
            (Some(tw), None) => (tw, even(h as f64 * tw as f64 / w.max(1) as f64)),
            (None, None) => (w & !1, h & !1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<EncodeSpec, SpecError> {
        EncodeSpec::from_json(json.as_bytes(), &Limits::default())
    }

    fn field_of(r: Result<EncodeSpec, SpecError>) -> String {
        match r {
            Err(SpecError { field, .. }) => field,
            other => format!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_full_spec_parses() -> Result<(), SpecError> {
        let s = parse(
            r#"{"input":"in/a.mov","output":"a","hardware":"cpu",
                "container":{"format":"hls","segment_s":4},"audio":{"mode":"copy"},
                "renditions":[{"codec":"h264","height":720,"bitrate_kbps":3000,"preset":"fast"},
                              {"codec":"h264","height":360,"quality":26}]}"#,
        )?;
        assert_eq!(s.renditions[0].label(), "720p");
        assert_eq!(s.container, Container::Hls { segment_s: 4.0 });
        Ok(())
    }

    #[test]
    fn impossible_values_name_their_field() {
        let base = |r: &str| format!(r#"{{"input":"a","output":"b","renditions":[{r}]}}"#);
        assert_eq!(
            field_of(parse(&base(r#"{"codec":"h264","height":721}"#))),
            "renditions[0].height"
        );
        assert_eq!(
            field_of(parse(&base(r#"{"codec":"h264","height":99999}"#))),
            "renditions[0].height"
        );
        assert_eq!(
            field_of(parse(&base(r#"{"codec":"h264","quality":60}"#))),
            "renditions[0].quality"
        );
        assert_eq!(
            field_of(parse(&base(
                r#"{"codec":"h264","quality":20,"bitrate_kbps":900}"#
            ))),
            "renditions[0].quality"
        );
        assert_eq!(
            field_of(parse(&base(r#"{"codec":"h264","colour":"red"}"#))),
            "colour"
        );
        assert_eq!(field_of(parse(&base(r#"{"codec":"mpeg2"}"#))), "mpeg2");
        assert_eq!(
            field_of(parse(r#"{"input":"a","output":"b","renditions":[]}"#)),
            "renditions"
        );
    }

    /// `docs/encode-job.schema.json` is what these types generate; run with
    /// `SPOOL_UPDATE_SCHEMA=1` to rewrite it after changing them.
    #[test]
    fn the_checked_in_json_schema_matches_the_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/encode-job.schema.json");
        let generated = json_schema();
        if std::env::var_os("SPOOL_UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &generated).expect("writing the schema");
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "docs/encode-job.schema.json is stale: run `SPOOL_UPDATE_SCHEMA=1 cargo test -p spool-encode-spec`"
        );
    }

    #[test]
    fn aspect_ratio_is_kept_and_even() {
        let r = Rendition {
            name: None,
            codec: Codec::H264,
            width: None,
            height: Some(720),
            bitrate_kbps: None,
            quality: None,
            preset: Preset::Medium,
            keyframe_interval_s: None,
        };
        assert_eq!(r.size_for(1920, 1080), (1280, 720));
        assert_eq!(r.size_for(1000, 1000), (720, 720));
        assert_eq!(r.size_for(1080, 1920).0 % 2, 0);
    }
}
