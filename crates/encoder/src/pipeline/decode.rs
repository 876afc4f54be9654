//! What the decode loop has seen, checked against the limits on every frame
//! (headers can lie or be absent), and how a truncated input is recognised.

use super::audio::audio_packet;
use super::video::feed_all;
use super::{
    AudioOut, CancellationToken, Container, EAGAIN_PAUSE, EncodeError, EncodeSpec, GraphInput,
    Instant, Job, Limits, MAX_EAGAIN, PROGRESS_EVERY, Progress, RenditionOut, corrupt, report,
};
use ff::{Packet, Rational, codec, format, frame};
use ffmpeg_next as ff;
/// The frame rate assumed for a stream that declares none (FFmpeg's own
/// default for raw streams).
pub(super) const DEFAULT_FPS: f64 = 25.0;
/// The frame rate the frame-count limit assumes: the highest rate cameras
/// record (slow motion), so `max_duration × this` frames is more than any
/// genuine input of the allowed length has.
pub(super) const MAX_PLAUSIBLE_FPS: f64 = 240.0;
/// Decoded frames may fall this far short of the declared count (edit lists,
/// a dropped leading B-frame) before an input counts as truncated: 2 %, and
/// at least this many frames.
pub(super) const TRUNCATION_SLACK_FRAMES: u64 = 2;

/// What the decode loop has seen, checked against the limits on every frame:
/// headers can lie or be absent (a Matroska written to a pipe, a raw stream).
pub(super) struct Decoded<'a> {
    display: &'a str,
    limits: &'a Limits,
    tb: Rational,
    /// Video frames decoded.
    pub(super) frames: u64,
    /// Of them, decoded on the GPU (NVDEC) and copied to memory.
    pub(super) gpu_frames: u64,
    /// The first and latest timestamps seen, in `tb`.
    first_ts: Option<i64>,
    last_ts: Option<i64>,
    /// `max_duration_s × MAX_PLAUSIBLE_FPS`: the backstop for streams
    /// without timestamps.
    max_frames: u64,
    /// HLS: segment length, to name the limit.
    segment_s: Option<f64>,
    /// One frame at the nominal rate in `tb`: the step for frames that come
    /// without a timestamp (raw streams).
    frame_step: i64,
    /// The audio stream's first timestamp and latest end, in its own time
    /// base, and the sum of its packets' durations, seconds: audio counts
    /// against `SPOOL_MAX_DURATION` like video.
    audio_first: Option<i64>,
    audio_end: Option<i64>,
    audio_sum_s: f64,
}

impl<'a> Decoded<'a> {
    pub(super) fn new(
        display: &'a str,
        limits: &'a Limits,
        tb: Rational,
        rate: Rational,
        spec: &EncodeSpec,
    ) -> Self {
        let fps = if rate.numerator() > 0 && rate.denominator() > 0 {
            f64::from(rate)
        } else {
            DEFAULT_FPS
        };
        let frame_step = (1.0 / (fps * f64::from(tb))).round().max(1.0) as i64;
        Decoded {
            frame_step,
            display,
            limits,
            tb,
            frames: 0,
            gpu_frames: 0,
            first_ts: None,
            last_ts: None,
            max_frames: (limits.max_duration_s * MAX_PLAUSIBLE_FPS).ceil() as u64,
            audio_first: None,
            audio_end: None,
            audio_sum_s: 0.0,
            segment_s: match spec.container {
                Container::Hls { segment_s } => Some(segment_s),
                Container::Mp4 => None,
            },
        }
    }

    pub(super) fn over(&self, reason: String) -> EncodeError {
        EncodeError::LimitExceeded {
            path: self.display.to_owned(),
            reason,
        }
    }

    /// Decoded time from the first frame, seconds.
    pub(super) fn time_s(&self) -> f64 {
        match (self.first_ts, self.last_ts) {
            (Some(a), Some(b)) => (b.saturating_sub(a)) as f64 * f64::from(self.tb),
            _ => 0.0,
        }
    }

    /// Counts a decoded frame, checking its size, the decoded time and the
    /// frame count; sets its pts from the best-effort timestamp.
    pub(super) fn frame(&mut self, f: &mut frame::Video) -> Result<(), EncodeError> {
        let l = self.limits;
        if f.width() > l.max_width || f.height() > l.max_height {
            return Err(self.over(format!(
                "a {}x{} frame at frame {}; at most {}x{} (SPOOL_MAX_RESOLUTION)",
                f.width(),
                f.height(),
                self.frames + 1,
                l.max_width,
                l.max_height
            )));
        }
        self.frames += 1;
        // A frame without a timestamp (a raw stream) follows the last one,
        // and so does one whose timestamp does not move forward (the same
        // timestamp three times in a damaged stream): the muxer refuses
        // timestamps that go backwards, and no retry would change that.
        let next = self
            .last_ts
            .map_or(0, |t| t.saturating_add(self.frame_step));
        let ts = match (f.timestamp(), self.last_ts) {
            (Some(t), Some(last)) if t <= last => Some(next),
            (Some(t), _) => Some(t),
            (None, _) => Some(next),
        };
        f.set_pts(ts);
        if let Some(t) = ts {
            self.first_ts.get_or_insert(t);
            self.last_ts = Some(self.last_ts.map_or(t, |m| m.max(t)));
        }
        let t = self.time_s();
        if t > l.max_duration_s {
            return Err(self.over(format!(
                "decoded past {t:.0} s; at most {:.0} s (SPOOL_MAX_DURATION)",
                l.max_duration_s
            )));
        }
        if self.frames > self.max_frames {
            return Err(self.over(format!(
                "more than {} frames, over {:.0} s even at {MAX_PLAUSIBLE_FPS} fps (SPOOL_MAX_DURATION)",
                self.max_frames, l.max_duration_s
            )));
        }
        Ok(())
    }

    /// Counts an audio packet of the stream that goes to the outputs
    /// against `SPOOL_MAX_DURATION` (a second of video with twenty minutes
    /// of audio is twenty minutes of output): by its timestamps, and by the
    /// sum of its durations, whichever is longer.
    pub(super) fn audio(&mut self, p: &Packet, tb: Rational) -> Result<(), EncodeError> {
        let unit = if tb.numerator() > 0 && tb.denominator() > 0 {
            f64::from(tb)
        } else {
            0.0
        };
        let dur = p.duration().max(0);
        self.audio_sum_s += dur as f64 * unit;
        let mut span = 0.0;
        if let Some(t) = p.pts().or(p.dts()) {
            let first = *self.audio_first.get_or_insert(t);
            let end = t.saturating_add(dur);
            let last = self.audio_end.map_or(end, |m| m.max(end));
            self.audio_end = Some(last);
            span = last.saturating_sub(first) as f64 * unit;
        }
        let t = span.max(self.audio_sum_s);
        if t > self.limits.max_duration_s {
            return Err(self.over(format!(
                "the audio runs past {t:.0} s; at most {:.0} s (SPOOL_MAX_DURATION)",
                self.limits.max_duration_s
            )));
        }
        Ok(())
    }

    /// Counts the HLS segments written so far against the limit.
    pub(super) fn segments(&self, outs: &[RenditionOut]) -> Result<(), EncodeError> {
        let Some(segment_s) = self.segment_s else {
            return Ok(());
        };
        for o in outs {
            let Some(dir) = &o.seg_dir else { continue };
            let n = std::fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter(|e| e.file_name().to_string_lossy().starts_with("seg_"))
                        .count() as u64
                })
                .unwrap_or(0);
            if n > self.limits.max_hls_segments {
                return Err(self.over(format!(
                    "rendition {} reached {n} HLS segments of {segment_s} s; at most {} (raise segment_s or SPOOL_MAX_HLS_SEGMENTS)",
                    o.label, self.limits.max_hls_segments
                )));
            }
        }
        Ok(())
    }

    /// A decoder error: a frame over the resolution limit (the decoder's
    /// `max_pixels` refused it) names the limit; anything else is corruption.
    pub(super) fn decode_error(
        &self,
        decoder: &codec::decoder::Video,
        e: ff::Error,
    ) -> EncodeError {
        let l = self.limits;
        if decoder.width() > l.max_width || decoder.height() > l.max_height {
            return self.over(format!(
                "a {}x{} frame after frame {}; at most {}x{} (SPOOL_MAX_RESOLUTION)",
                decoder.width(),
                decoder.height(),
                self.frames,
                l.max_width,
                l.max_height
            ));
        }
        corrupt(self.display, e)
    }

    /// Why the input looks cut short, if it does: a read error, or fewer
    /// frames (or less time) than its header declares.
    pub(super) fn truncation(
        &self,
        read_error: Option<ff::Error>,
        declared_frames: Option<u64>,
        declared_s: f64,
    ) -> Option<String> {
        if let Some(e) = read_error {
            return Some(format!(
                "reading stopped after {} frames ({:.1} s): {e}",
                self.frames,
                self.time_s()
            ));
        }
        if let Some(n) = declared_frames {
            let slack = (n / 50).max(TRUNCATION_SLACK_FRAMES);
            if self.frames + slack < n {
                return Some(format!(
                    "{} of the {n} frames its header declares were decoded",
                    self.frames
                ));
            }
            return None;
        }
        // No frame count (Matroska, MPEG-TS): compare time, allowing a frame
        // or two and 2 % for timestamps that start late.
        let got = self.time_s();
        if declared_s > 0.0 && got + (declared_s * 0.02).max(1.0) < declared_s {
            return Some(format!(
                "{got:.1} s of the {declared_s:.1} s its header declares were decoded"
            ));
        }
        None
    }
}

/// Where decoded video and audio go: each rendition's filter graph and
/// encoder, and the audio path.
pub(super) struct Sinks<'a> {
    pub(super) graphs: &'a mut GraphInput,
    pub(super) outs: &'a mut [RenditionOut],
    pub(super) audio: &'a mut AudioOut,
}

/// What reading the input reports to and stops by.
pub(super) struct Reading<'a, 'j> {
    pub(super) job: &'a Job<'j>,
    /// The input's duration, for the progress percentage.
    pub(super) duration_s: f64,
    pub(super) started: Instant,
    pub(super) progress: &'a mut dyn FnMut(Progress),
    pub(super) cancel: &'a CancellationToken,
    /// A chunk's frames: timestamps in `start..end` of the video stream
    /// (counted from the input's start, as outputs are); `None` for all.
    pub(super) range: Option<(i64, Option<i64>)>,
}

/// How a ranged read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RangeEnd {
    /// Not ranged, or the range runs to the input's end.
    Open,
    /// A frame at or past the range's end was decoded: every frame of the
    /// range was.
    Reached,
    /// The input ended before the range's end.
    Short,
}

/// The read loop: every packet read with `Packet::read` and decided per error
/// (the packet iterator would retry a failing read forever), video decoded and
/// fed to every rendition, audio passed on, progress reported; then the
/// decoder flushed. Returns the read error that ended the input early, if any.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_all(
    ictx: &mut format::context::Input,
    v_index: usize,
    decoder: &mut codec::decoder::Video,
    seen: &mut Decoded<'_>,
    sinks: Sinks<'_>,
    run: Reading<'_, '_>,
) -> Result<(Option<ff::Error>, RangeEnd), EncodeError> {
    let Sinks {
        graphs,
        outs,
        audio,
    } = sinks;
    let Reading {
        job,
        duration_s,
        started,
        progress,
        cancel,
        range,
    } = run;
    let display = job.display;
    let mut last_report = Instant::now() - PROGRESS_EVERY;
    let mut decoded = frame::Video::empty();
    let mut packet = Packet::empty();
    let mut eagain = 0u32;
    let mut read_error: Option<ff::Error> = None;
    let origins = origins(ictx, v_index, audio.input());
    let mut end = RangeEnd::Open;
    if let Some((start, stop)) = range {
        seek_to(
            ictx,
            v_index,
            start,
            origins.get(v_index).copied().unwrap_or(0),
        )?;
        if stop.is_some() {
            end = RangeEnd::Short;
        }
    }
    let wanted = |ts: Option<i64>, end: &mut RangeEnd| -> bool {
        let Some((start, stop)) = range else {
            return true;
        };
        let Some(t) = ts else { return true };
        if stop.is_some_and(|e| t >= e) {
            *end = RangeEnd::Reached;
            return false;
        }
        t >= start
    };
    loop {
        if cancel.is_cancelled() {
            return Err(EncodeError::Cancelled);
        }
        match packet.read(ictx) {
            Ok(()) => eagain = 0,
            Err(ff::Error::Eof) => break,
            Err(ff::Error::Exit) if cancel.is_cancelled() => return Err(EncodeError::Cancelled),
            Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => {
                eagain += 1;
                if eagain > MAX_EAGAIN {
                    read_error = Some(ff::Error::Other { errno });
                    break;
                }
                std::thread::sleep(EAGAIN_PAUSE);
                continue;
            }
            Err(e) => {
                read_error = Some(e);
                break;
            }
        }
        let si = packet.stream();
        // Timestamps counted from the input's start: a source starting at
        // 10 h (a broadcast capture) or before 0 (an edit list) still gives
        // outputs that start at 0 and declare their real length.
        if let Some(o) = origins.get(si).copied().filter(|o| *o != 0) {
            packet.set_pts(packet.pts().map(|t| t.saturating_sub(o)));
            packet.set_dts(packet.dts().map(|t| t.saturating_sub(o)));
        }
        if si == v_index {
            if let Err(e) = decoder.send_packet(&packet) {
                return Err(seen.decode_error(decoder, e));
            }
            while decoder.receive_frame(&mut decoded).is_ok() {
                if wanted(decoded.timestamp(), &mut end) {
                    take(&mut decoded, seen, outs, graphs, display)?;
                }
            }
            if end == RangeEnd::Reached {
                break;
            }
        } else if range.is_none() {
            if audio.input() == Some(si)
                && let Some(st) = ictx.stream(si)
            {
                seen.audio(&packet, st.time_base())?;
            }
            audio_packet(audio, outs, si, &packet)?;
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            seen.segments(outs)?;
            progress(report(seen.frames, seen.time_s(), duration_s, started));
        }
    }
    if cancel.is_cancelled() {
        return Err(EncodeError::Cancelled);
    }
    // Flush decoder, filters, encoders.
    if let Err(e) = decoder.send_eof() {
        return Err(seen.decode_error(decoder, e));
    }
    while decoder.receive_frame(&mut decoded).is_ok() {
        if wanted(decoded.timestamp(), &mut end) {
            take(&mut decoded, seen, outs, graphs, display)?;
        }
    }
    Ok((read_error, end))
}

/// Seeks to the keyframe at or before `start` (video timestamps counted
/// from the input's start; `origin` is the stream's start in its time
/// base): a chunk decodes from there and drops the frames before `start`.
fn seek_to(
    ictx: &mut format::context::Input,
    v_index: usize,
    start: i64,
    origin: i64,
) -> Result<(), EncodeError> {
    use ff::Rescale;
    let Some(tb) = ictx.stream(v_index).map(|s| s.time_base()) else {
        return Err(EncodeError::Failed("the video stream is gone".into()));
    };
    // Rounded down: landing a keyframe early costs a GOP of decoding,
    // landing late would lose frames.
    let raw = start.saturating_add(origin);
    let us = raw.rescale(tb, ff::rescale::TIME_BASE).saturating_sub(1);
    if raw <= 0 {
        return Ok(());
    }
    ictx.seek(us, ..us).map_err(|e| {
        super::failed(
            format!(
                "seeking to the chunk's start ({:.3} s)",
                raw as f64 * f64::from(tb)
            ),
            e,
        )
    })
}

/// One decoded frame through every rendition. A CUDA frame stays on the
/// GPU: each rendition's graph scales it there or copies it out
/// ([`chain`]).
fn take(
    decoded: &mut frame::Video,
    seen: &mut Decoded<'_>,
    outs: &mut [RenditionOut],
    graphs: &mut GraphInput,
    display: &str,
) -> Result<(), EncodeError> {
    if crate::hw::is_cuda(decoded) {
        seen.gpu_frames += 1;
    }
    seen.frame(decoded)?;
    feed_all(outs, decoded, graphs, display)
}

/// Per stream, in its own time base, the time outputs start from: the
/// earliest start of the video and the audio that go to the outputs (0 when
/// neither declares one).
pub(super) fn origins(
    ictx: &format::context::Input,
    video: usize,
    audio: Option<usize>,
) -> Vec<i64> {
    use ff::Rescale;
    let base = ff::rescale::TIME_BASE;
    let start_us = ictx
        .streams()
        .filter(|s| s.index() == video || Some(s.index()) == audio)
        .filter(|s| s.start_time() != ff::ffi::AV_NOPTS_VALUE)
        .map(|s| s.start_time().rescale(s.time_base(), base))
        .min()
        .unwrap_or(0);
    ictx.streams()
        .map(|s| {
            if s.time_base().numerator() > 0 && s.time_base().denominator() > 0 {
                start_us.rescale(base, s.time_base())
            } else {
                0
            }
        })
        .collect()
}
