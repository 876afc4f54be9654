//! The keyframe index a chunked encode is planned from: every video
//! keyframe's timestamp, read from the packets without decoding anything.

use super::decode::origins;
use super::{CancellationToken, EncodeError, failed, open_input};
use crate::Limits;
use crate::paths::InputFile;
use ff::{Packet, media};
use ffmpeg_next as ff;

/// The input's video keyframes and where its video ends.
#[derive(Debug, Clone)]
pub(crate) struct KeyframeIndex {
    /// The video stream's time base, `[num, den]`.
    pub(crate) time_base: [i32; 2],
    /// Keyframe timestamps, increasing, counted from the video's start.
    pub(crate) keyframes: Vec<i64>,
    /// Past the last frame (its timestamp plus its duration).
    pub(crate) end: i64,
    /// How far the video starts after the outputs' origin, in the video's
    /// time base (see `decode::origins`).
    pub(crate) video_offset: i64,
    /// Whether the input has an audio stream.
    pub(crate) has_audio: bool,
}

/// Reads every video packet's flags and timestamps (no decode): the
/// keyframes a chunk may start at.
pub(crate) fn keyframes(
    input: &InputFile,
    display: &str,
    limits: &Limits,
    with_audio: bool,
    cancel: &CancellationToken,
) -> Result<KeyframeIndex, EncodeError> {
    let mut opened = open_input(input, display, limits, cancel)?;
    let ictx = &mut opened.ctx;
    let (v, tb) = ictx
        .streams()
        .best(media::Type::Video)
        .map(|s| (s.index(), s.time_base()))
        .ok_or_else(|| EncodeError::BadInput {
            path: display.to_owned(),
            reason: "it has no video stream".into(),
        })?;
    if tb.numerator() <= 0 || tb.denominator() <= 0 {
        return Err(EncodeError::BadInput {
            path: display.to_owned(),
            reason: "its video stream has no time base, so it cannot be split".into(),
        });
    }
    let origin = origins(ictx, v, None).get(v).copied().unwrap_or(0);
    let audio = ictx.streams().best(media::Type::Audio).map(|s| s.index());
    let combined = if with_audio {
        origins(ictx, v, audio).get(v).copied().unwrap_or(0)
    } else {
        origin
    };
    let mut keyframes = Vec::new();
    let mut end = 0i64;
    let mut packet = Packet::empty();
    loop {
        if cancel.is_cancelled() {
            return Err(EncodeError::Cancelled);
        }
        match packet.read(ictx) {
            Ok(()) => {}
            Err(ff::Error::Eof) => break,
            Err(ff::Error::Exit) if cancel.is_cancelled() => return Err(EncodeError::Cancelled),
            Err(e) => return Err(failed("reading the input's keyframe index", e)),
        }
        if packet.stream() != v {
            continue;
        }
        let Some(pts) = packet.pts() else {
            return Err(EncodeError::BadInput {
                path: display.to_owned(),
                reason: "a video packet has no timestamp, so the input cannot be split at keyframes (encode it without chunking)".into(),
            });
        };
        let t = pts.saturating_sub(origin);
        end = end.max(t.saturating_add(packet.duration().max(0)));
        if packet.is_key() {
            keyframes.push(t);
        }
    }
    keyframes.sort_unstable();
    keyframes.dedup();
    Ok(KeyframeIndex {
        time_base: [tb.numerator(), tb.denominator()],
        keyframes,
        end,
        video_offset: (origin - combined).max(0),
        has_audio: audio.is_some(),
    })
}
