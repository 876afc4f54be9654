//! The encode pipeline: demux → decode → (per rendition) scale → encode → mux,
//! with audio alongside, all in-process through `ffmpeg-next`.
//!
//! ```text
//!                      ┌─ filter "scale,format" ─ encoder ─┐
//! input ─ demux ─ decode ─┼─ filter …               ─ encoder ─┼─ mux (one output per rendition)
//!            └─ audio: decode ─ AAC encode (once) / copy ──────┘  packets go to every output
//! ```
//!
//! One decode feeds every rendition of a ladder. Timestamps pass through in the
//! input stream's time base, so variable-frame-rate inputs keep their timing.
//! Outputs are written into a staging directory ([`Staging`], see
//! [`crate::paths`]) and published only when complete; a cancelled or failed
//! encode leaves nothing behind.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ff::{Dictionary, Packet, Rational, codec, encoder, filter, format, frame, media};
use ffmpeg_next as ff;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, encoder_name, encoder_options};
use crate::error::EncodeError;
use crate::paths::{InputFile, OutputTarget, Staging};
use crate::spec::{Audio, Container, EncodeSpec, Limits};

/// At most this many progress reports a second.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Keyframe interval when the spec sets none: 2 s divides common HLS segment
/// lengths.
const DEFAULT_KEYFRAME_S: f64 = 2.0;
/// Demuxers an input may use. Playlists and concat lists are left out: they
/// open other files and URLs, which would escape the input root.
const INPUT_FORMATS: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,mxf,wav,mp3,aac,ogg,ivf,h264,hevc,yuv4mpegpipe";
/// The frame rate assumed for a stream that declares none (FFmpeg's own
/// default for raw streams).
const DEFAULT_FPS: f64 = 25.0;
/// The frame rate the frame-count limit assumes: the highest rate cameras
/// record (slow motion), so `max_duration × this` frames is more than any
/// genuine input of the allowed length has.
const MAX_PLAUSIBLE_FPS: f64 = 240.0;
/// A read that keeps answering EAGAIN this many times in a row is an error,
/// not a source catching up (a local file never answers EAGAIN for long).
const MAX_EAGAIN: u32 = 1000;
/// How long to wait before reading again after EAGAIN.
const EAGAIN_PAUSE: Duration = Duration::from_millis(5);
/// Decoded frames may fall this far short of the declared count (edit lists,
/// a dropped leading B-frame) before an input counts as truncated: 2 %, and
/// at least this many frames.
const TRUNCATION_SLACK_FRAMES: u64 = 2;

/// Progress of a running encode.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Progress {
    /// Frames decoded so far.
    pub frames: u64,
    /// Percent of the input's duration done (0 when unknown).
    pub percent: f64,
    /// Decoded frames per second of wall time.
    pub fps: f64,
    /// Input time reached, seconds.
    pub out_time_s: f64,
}

/// One finished output.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutputInfo {
    /// The rendition's name.
    pub rendition: String,
    /// The MP4 file, or the HLS rendition playlist.
    pub path: PathBuf,
    /// Bytes on disk (all segments for HLS).
    pub size_bytes: u64,
    /// Duration read back from the output, seconds.
    pub duration_s: f64,
    /// The codec (`h264`, `hevc`, `av1`).
    pub codec: String,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Average bitrate, bit/s.
    pub bitrate_bps: u64,
    /// The FFmpeg encoder that made it.
    pub encoder: String,
    /// Frames encoded.
    pub frames: u64,
}

/// What an encode produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EncodeResult {
    /// One per rendition.
    pub outputs: Vec<OutputInfo>,
    /// The HLS master playlist, for HLS.
    pub master_playlist: Option<PathBuf>,
    /// Where it ran.
    pub backend: Backend,
    /// Why it ran there (e.g. why not on NVENC).
    pub backend_reason: String,
    /// Wall time, seconds.
    pub wall_s: f64,
    /// Decoded frames per second of wall time.
    pub fps: f64,
    /// Video frames decoded from the input.
    pub decoded_frames: u64,
    /// Video frames the input's container declares, when it declares any.
    pub declared_frames: Option<u64>,
    /// Whether the input ended early (only with `allow_truncated`; otherwise
    /// such an input fails the job).
    pub truncated: bool,
}

/// One encode's inputs: the spec, the opened input, the output's directory.
pub(crate) struct Job<'a> {
    /// The validated spec.
    pub spec: &'a EncodeSpec,
    /// The input, opened and confined.
    pub input: &'a InputFile,
    /// The input as the job named it, for messages.
    pub display: &'a str,
    /// The output's directory and name.
    pub target: &'a OutputTarget,
    /// The job id that owns the outputs (replaces its own earlier ones).
    pub owner: Option<&'a str>,
    /// The worker's limits.
    pub limits: &'a Limits,
}

fn failed(what: impl std::fmt::Display, e: impl std::fmt::Display) -> EncodeError {
    EncodeError::Failed(format!("{what}: {e}"))
}

/// An opened input and the cancellation token its interrupt callback reads;
/// the context is declared first so it is dropped (closed) before the token.
pub(crate) struct OpenedInput {
    /// FFmpeg's demuxer.
    pub ctx: format::context::Input,
    /// Read by [`interrupted`] while FFmpeg blocks; must outlive `ctx`.
    _token: Box<CancellationToken>,
}

/// FFmpeg's interrupt callback: non-zero makes a blocked read return
/// `AVERROR_EXIT`.
extern "C" fn interrupted(opaque: *mut std::ffi::c_void) -> std::ffi::c_int {
    // SAFETY: `opaque` is the `Box<CancellationToken>` owned by the
    // `OpenedInput` whose context calls this; the box outlives the context.
    #[allow(unsafe_code)]
    let token = unsafe { &*(opaque as *const CancellationToken) };
    std::ffi::c_int::from(token.is_cancelled())
}

/// `avformat_open_input` with options and an interrupt callback tied to
/// `cancel` (ffmpeg-next offers one or the other, and leaks the callback).
#[allow(unsafe_code)]
fn open_interruptible(
    path: &str,
    opts: Dictionary,
    cancel: &CancellationToken,
) -> Result<OpenedInput, ff::Error> {
    use ff::ffi;
    let token = Box::new(cancel.clone());
    let c_path = std::ffi::CString::new(path).map_err(|_| ff::Error::InvalidData)?;
    // SAFETY: the pointers passed are valid for the calls; on failure
    // avformat_open_input frees the context itself, and on success the
    // context is owned by the returned `Input`, which closes it on drop.
    unsafe {
        let mut ps = ffi::avformat_alloc_context();
        if ps.is_null() {
            return Err(ff::Error::Other {
                errno: ff::util::error::ENOMEM,
            });
        }
        (*ps).interrupt_callback = ffi::AVIOInterruptCB {
            callback: Some(interrupted),
            opaque: &*token as *const CancellationToken as *mut std::ffi::c_void,
        };
        let mut dict = opts.disown();
        let res = ffi::avformat_open_input(&mut ps, c_path.as_ptr(), std::ptr::null(), &mut dict);
        drop(Dictionary::own(dict));
        if res < 0 {
            return Err(ff::Error::from(res));
        }
        let r = ffi::avformat_find_stream_info(ps, std::ptr::null_mut());
        if r < 0 {
            ffi::avformat_close_input(&mut ps);
            return Err(ff::Error::from(r));
        }
        Ok(OpenedInput {
            ctx: format::context::Input::wrap(ps),
            _token: token,
        })
    }
}

/// Opens an input with the protocol and demuxer whitelists, the probe limit
/// and the interrupt callback, and checks the limits its header shows (the
/// decode loop checks them again on what it decodes).
pub(crate) fn open_input(
    input: &InputFile,
    display: &str,
    limits: &Limits,
    cancel: &CancellationToken,
) -> Result<OpenedInput, EncodeError> {
    let bad = |reason: String| EncodeError::BadInput {
        path: display.to_owned(),
        reason,
    };
    if input.head(16).starts_with(b"#EXTM3U") {
        return Err(bad(
            "playlists are not accepted as input: they reference other files and URLs".into(),
        ));
    }
    let mut opts = Dictionary::new();
    // FFmpeg reads the already-opened file through /proc/self/fd: the file
    // protocol only.
    opts.set("protocol_whitelist", "file");
    opts.set("format_whitelist", INPUT_FORMATS);
    opts.set("probesize", &limits.probe_size.to_string());
    let opened = open_interruptible(&input.ffmpeg_path(), opts, cancel).map_err(|e| {
        if cancel.is_cancelled() {
            return EncodeError::Cancelled;
        }
        bad(format!(
            "{e} (not a supported media file, or it is corrupt or truncated)"
        ))
    })?;
    let ictx = &opened.ctx;
    let over = |reason: String| EncodeError::LimitExceeded {
        path: display.to_owned(),
        reason,
    };
    if ictx.nb_streams() as usize > limits.max_streams {
        return Err(over(format!(
            "{} streams; at most {} (SPOOL_MAX_STREAMS)",
            ictx.nb_streams(),
            limits.max_streams
        )));
    }
    let duration = ictx.duration() as f64 / f64::from(ff::ffi::AV_TIME_BASE);
    if duration > limits.max_duration_s {
        return Err(over(format!(
            "{duration:.0} s long; at most {:.0} s (SPOOL_MAX_DURATION)",
            limits.max_duration_s
        )));
    }
    let video = ictx
        .streams()
        .best(media::Type::Video)
        .ok_or_else(|| bad("it has no video stream".into()))?;
    let par = video.parameters();
    let ctx = codec::context::Context::from_parameters(par).map_err(|e| bad(e.to_string()))?;
    let dec = ctx
        .decoder()
        .video()
        .map_err(|e| bad(format!("no decoder for its video: {e}")))?;
    if dec.width() == 0 || dec.height() == 0 {
        return Err(bad("its video has no frame size".into()));
    }
    if dec.width() > limits.max_width || dec.height() > limits.max_height {
        return Err(over(format!(
            "{}x{} frames; at most {}x{} (SPOOL_MAX_RESOLUTION)",
            dec.width(),
            dec.height(),
            limits.max_width,
            limits.max_height
        )));
    }
    Ok(opened)
}

/// The source side every rendition's filter graph is built for.
struct GraphInput {
    shape: FrameShape,
    tb: Rational,
    rotation: Rotation,
}

/// One rendition's filter, encoder and muxer.
struct RenditionOut {
    label: String,
    /// The output frame size.
    width: u32,
    height: u32,
    encoder_name: &'static str,
    graph: filter::Graph,
    encoder: encoder::Video,
    enc_tb: Rational,
    octx: format::context::Output,
    video_tb: Rational,
    audio_tb: Option<Rational>,
    /// MP4: the file's name in the staging directory.
    stage_name: String,
    /// MP4: the file's final name in the output's directory.
    final_name: String,
    /// Where the output will be, for results.
    final_path: PathBuf,
    /// HLS: the rendition's staging directory (by descriptor), where its
    /// segments are counted.
    seg_dir: Option<String>,
    frames: u64,
    /// One frame at the nominal rate, in the encoder's time base: the duration
    /// of packets the encoder leaves without one (else MP4 drops the last frame).
    frame_dur: i64,
}

/// The audio side: decode + AAC encode once, or copy.
enum AudioOut {
    None,
    Copy {
        ist: usize,
        ist_tb: Rational,
    },
    Aac {
        ist: usize,
        ist_tb: Rational,
        decoder: codec::decoder::Audio,
        graph: filter::Graph,
        encoder: encoder::Audio,
        enc_tb: Rational,
    },
}

/// The names a spec's outputs take in the output's directory, and whether
/// each is a directory (HLS) or a file (MP4).
pub(crate) fn output_names(spec: &EncodeSpec, target: &OutputTarget) -> Vec<(String, bool)> {
    if matches!(spec.container, Container::Hls { .. }) {
        return vec![(target.name().to_owned(), true)];
    }
    let ladder = spec.renditions.len() > 1;
    spec.renditions
        .iter()
        .map(|r| {
            (
                mp4_name(target.name(), ladder.then_some(r.label().as_str())),
                false,
            )
        })
        .collect()
}

/// Runs one encode on `backend`.
pub(crate) fn run(
    job: &Job<'_>,
    backend: Backend,
    backend_reason: String,
    progress: &mut dyn FnMut(Progress),
    cancel: &CancellationToken,
) -> Result<EncodeResult, EncodeError> {
    let Job {
        spec,
        display,
        limits,
        ..
    } = *job;
    let started = Instant::now();
    let mut opened = open_input(job.input, display, limits, cancel)?;
    let ictx = &mut opened.ctx;
    let over = |reason: String| EncodeError::LimitExceeded {
        path: display.to_owned(),
        reason,
    };
    let vst = ictx
        .streams()
        .best(media::Type::Video)
        .ok_or_else(|| EncodeError::BadInput {
            path: display.into(),
            reason: "no video stream".into(),
        })?;
    let v_index = vst.index();
    let v_tb = vst.time_base();
    let declared_frames = u64::try_from(vst.frames()).ok().filter(|n| *n > 0);
    let frame_rate = {
        let r = vst.avg_frame_rate();
        if r.numerator() > 0 && r.denominator() > 0 {
            r
        } else {
            vst.rate()
        }
    };
    let duration_s = {
        let d = ictx.duration();
        if d > 0 {
            d as f64 / f64::from(ff::ffi::AV_TIME_BASE)
        } else {
            0.0
        }
    };
    // The video stream's own declared length, to tell a truncated input.
    let video_duration_s = if vst.duration() > 0 {
        vst.duration() as f64 * f64::from(v_tb)
    } else {
        0.0
    };
    if let Container::Hls { segment_s } = spec.container {
        let segments = (duration_s / segment_s).ceil() as u64;
        if segments > limits.max_hls_segments {
            return Err(over(format!(
                "{segments} HLS segments of {segment_s} s per rendition; at most {} (raise segment_s or SPOOL_MAX_HLS_SEGMENTS)",
                limits.max_hls_segments
            )));
        }
    }
    let mut vctx = codec::context::Context::from_parameters(vst.parameters())
        .map_err(|e| failed("video decoder", e))?;
    vctx.set_threading(codec::threading::Config {
        kind: codec::threading::Type::Frame,
        count: 0,
        ..Default::default()
    });
    let rotation = Rotation::of(&vst);
    let vcodec = ff::decoder::find(vctx.id()).ok_or_else(|| EncodeError::BadInput {
        path: display.into(),
        reason: "no decoder for its video".into(),
    })?;
    // The decoder refuses to allocate frames over the resolution limit, so a
    // stream that grows mid-way cannot take the worker's memory with it.
    let mut dopts = Dictionary::new();
    dopts.set(
        "max_pixels",
        &(u64::from(limits.max_width) * u64::from(limits.max_height)).to_string(),
    );
    let mut decoder = vctx
        .decoder()
        .open_as_with(vcodec, dopts)
        .and_then(|o| o.video())
        .map_err(|e| failed("video decoder", e))?;
    // Sizes are those of the picture as displayed: a phone's portrait video is
    // stored landscape with a display matrix, and comes out portrait.
    let (src_w, src_h) = match rotation {
        Rotation::Clock | Rotation::CounterClock => (decoder.height(), decoder.width()),
        _ => (decoder.width(), decoder.height()),
    };

    if decoder.format() == ff::format::Pixel::None {
        // Probing decoded no picture: the stream's data is not what its
        // header describes.
        return Err(EncodeError::BadInput {
            path: display.into(),
            reason: "its video could not be decoded while probing (corrupt media data)".into(),
        });
    }
    let mut staging = Staging::new(job.target)?;
    let hls = matches!(spec.container, Container::Hls { .. });
    let names = output_names(spec, job.target);

    // Audio first: every output gets the same audio stream layout.
    let astream = match spec.audio {
        Audio::None => None,
        _ => ictx
            .streams()
            .best(media::Type::Audio)
            .map(|s| (s.index(), s.time_base(), s.parameters())),
    };

    let mut outs = Vec::with_capacity(spec.renditions.len());
    for (i, r) in spec.renditions.iter().enumerate() {
        let label = r.label();
        let (w, h) = r.size_for(src_w, src_h);
        if w > limits.max_width || h > limits.max_height || w < 2 || h < 2 {
            return Err(over(format!(
                "rendition {label} would be {w}x{h} from a {src_w}x{src_h} input; at most {}x{} (SPOOL_MAX_RESOLUTION)",
                limits.max_width, limits.max_height
            )));
        }
        let (staged, stage_name, final_name, final_path, seg_dir) = if hls {
            let dir = staging.subdir(&label)?;
            (
                format!("{dir}/index.m3u8"),
                String::new(),
                String::new(),
                job.target
                    .display_of(job.target.name())
                    .join(&label)
                    .join("index.m3u8"),
                Some(dir),
            )
        } else {
            let final_name = names
                .get(i)
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| format!("{label}.mp4"));
            let stage_name = format!("{i}.mp4");
            (
                staging.path(&stage_name),
                stage_name,
                final_name.clone(),
                job.target.display_of(&final_name),
                None,
            )
        };
        let mut octx = if hls {
            format::output_as(&staged, "hls")
        } else {
            format::output_as(&staged, "mp4")
        }
        .map_err(|e| failed(format!("creating the output of rendition {label}"), e))?;

        let name = encoder_name(r.codec, backend);
        let codec = encoder::find_by_name(name).ok_or_else(|| match backend {
            Backend::Nvenc { .. } => {
                EncodeError::NvencUnavailable(format!("this FFmpeg build has no {name}"))
            }
            Backend::Cpu => EncodeError::Failed(format!("this FFmpeg build has no {name} encoder")),
        })?;
        let global = octx.format().flags().contains(format::Flags::GLOBAL_HEADER);
        let mut ectx = codec::context::Context::new_with_codec(codec);
        ectx.set_threading(codec::threading::Config {
            kind: codec::threading::Type::Frame,
            count: 0,
            ..Default::default()
        });
        let mut enc = ectx.encoder().video().map_err(|e| failed(name, e))?;
        enc.set_width(w);
        enc.set_height(h);
        enc.set_format(ff::format::Pixel::YUV420P);
        enc.set_time_base(v_tb);
        enc.set_frame_rate(Some(frame_rate));
        let fps = if frame_rate.denominator() > 0 {
            f64::from(frame_rate.numerator()) / f64::from(frame_rate.denominator())
        } else {
            25.0
        };
        enc.set_gop(
            (r.keyframe_interval_s.unwrap_or(DEFAULT_KEYFRAME_S) * fps)
                .round()
                .max(1.0) as u32,
        );
        if let Some(kbps) = r.bitrate_kbps {
            enc.set_bit_rate(kbps as usize * 1000);
        }
        // Closed GOPs: every segment and every seek point decodes on its own.
        let mut flags = codec::Flags::CLOSED_GOP;
        if global {
            flags |= codec::Flags::GLOBAL_HEADER;
        }
        enc.set_flags(flags);
        let mut opts = Dictionary::new();
        for (k, v) in encoder_options(r, backend) {
            opts.set(&k, &v);
        }
        if hls && r.codec == crate::spec::Codec::H264 && backend == Backend::Cpu {
            // Segments must start on keyframes at regular times.
            opts.set("sc_threshold", "0");
        }
        let encoder = enc.open_with(opts).map_err(|e| match backend {
            Backend::Nvenc { .. } => {
                EncodeError::NvencUnavailable(format!("{name} refused the session: {e}"))
            }
            Backend::Cpu => failed(format!("opening {name}"), e),
        })?;
        let enc_tb = encoder.time_base();
        {
            let mut ost = octx
                .add_stream(codec)
                .map_err(|e| failed("adding the video stream", e))?;
            ost.set_parameters(&encoder);
            ost.set_time_base(enc_tb);
        }
        let graph = video_filter(FrameShape::of_decoder(&decoder), v_tb, rotation, w, h)?;
        let frame_dur = if frame_rate.numerator() > 0 && enc_tb.numerator() > 0 {
            (f64::from(enc_tb.denominator()) * f64::from(frame_rate.denominator())
                / (f64::from(enc_tb.numerator()) * f64::from(frame_rate.numerator())))
            .round() as i64
        } else {
            0
        };
        outs.push(RenditionOut {
            frame_dur,
            label,
            encoder_name: name,
            graph,
            encoder,
            enc_tb,
            octx,
            video_tb: enc_tb,
            audio_tb: None,
            stage_name,
            final_name,
            final_path,
            seg_dir,
            width: w,
            height: h,
            frames: 0,
        });
    }

    let audio_codec = astream.as_ref().map(|(_, _, par)| par.id().name());
    let mut audio = match (&spec.audio, astream) {
        (_, None) | (Audio::None, _) => AudioOut::None,
        (Audio::Copy, Some((ist, ist_tb, par))) => {
            for o in &mut outs {
                let mut ost = o
                    .octx
                    .add_stream(encoder::find(codec::Id::None))
                    .map_err(|e| failed("adding the audio stream", e))?;
                ost.set_parameters(par.clone());
                clear_codec_tag(&mut ost);
            }
            AudioOut::Copy { ist, ist_tb }
        }
        (Audio::Aac { bitrate_kbps }, Some((ist, ist_tb, par))) => {
            aac_setup(&mut outs, ist, ist_tb, par, *bitrate_kbps)?
        }
    };

    for o in &mut outs {
        let mut hopts = Dictionary::new();
        if let Container::Hls { segment_s } = spec.container {
            hopts.set("hls_time", &format!("{segment_s}"));
            hopts.set("hls_playlist_type", "vod");
            hopts.set("hls_list_size", "0");
            // spool's own pattern in spool's own directory: the only name
            // FFmpeg expands.
            let dir = o.seg_dir.as_deref().unwrap_or_default();
            hopts.set("hls_segment_filename", &format!("{dir}/seg_%05d.ts"));
        } else {
            hopts.set("movflags", "+faststart");
        }
        o.octx.write_header_with(hopts).map_err(|e| {
            if let (Audio::Copy, Some(codec)) = (&spec.audio, audio_codec) {
                // The only stream the spec did not ask spool to encode.
                EncodeError::spec(
                    "audio.mode",
                    format!(
                        "copy: the input's {} audio cannot be stored in {} ({e}); use \"aac\"",
                        codec,
                        if hls { "HLS" } else { "MP4" }
                    ),
                )
            } else {
                failed(format!("writing the header of rendition {}", o.label), e)
            }
        })?;
        o.video_tb = o.octx.stream(0).map(|s| s.time_base()).unwrap_or(o.enc_tb);
        o.audio_tb = o.octx.stream(1).map(|s| s.time_base());
    }

    // The main loop: read with `Packet::read` and decide per error (the
    // packet iterator would retry a failing read forever).
    let mut seen = Decoded::new(display, limits, v_tb, frame_rate, spec);
    let mut graphs = GraphInput {
        shape: FrameShape::of_decoder(&decoder),
        tb: v_tb,
        rotation,
    };
    let mut last_report = Instant::now() - PROGRESS_EVERY;
    let mut decoded = frame::Video::empty();
    let mut packet = Packet::empty();
    let mut eagain = 0u32;
    let mut read_error: Option<ff::Error> = None;
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
        if si == v_index {
            if let Err(e) = decoder.send_packet(&packet) {
                return Err(seen.decode_error(&decoder, e));
            }
            while decoder.receive_frame(&mut decoded).is_ok() {
                seen.frame(&mut decoded)?;
                feed_all(&mut outs, &decoded, &mut graphs, display)?;
            }
        } else {
            audio_packet(&mut audio, &mut outs, si, &packet)?;
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            seen.segments(&outs, spec)?;
            progress(report(seen.frames, seen.time_s(), duration_s, started));
        }
    }
    if cancel.is_cancelled() {
        return Err(EncodeError::Cancelled);
    }
    // Flush decoder, filters, encoders.
    if let Err(e) = decoder.send_eof() {
        return Err(seen.decode_error(&decoder, e));
    }
    while decoder.receive_frame(&mut decoded).is_ok() {
        seen.frame(&mut decoded)?;
        feed_all(&mut outs, &decoded, &mut graphs, display)?;
    }
    if seen.frames == 0 {
        return Err(EncodeError::BadInput {
            path: display.into(),
            reason: match read_error {
                Some(e) => format!("no video frame could be decoded (reading failed: {e})"),
                None => "no video frame could be decoded (corrupt or not video)".into(),
            },
        });
    }
    let truncated = seen.truncation(read_error, declared_frames, video_duration_s);
    if let Some(why) = &truncated
        && !spec.allow_truncated
    {
        return Err(EncodeError::BadInput {
            path: display.into(),
            reason: format!(
                "{why}: the input is truncated or damaged (set \"allow_truncated\": true to keep what decodes)"
            ),
        });
    }
    for o in &mut outs {
        push_video(o, None)?;
    }
    audio_flush(&mut audio, &mut outs)?;
    for o in &mut outs {
        o.octx
            .write_trailer()
            .map_err(|e| failed(format!("finishing rendition {}", o.label), e))?;
    }
    seen.segments(&outs, spec)?;

    // Publish: move the staged outputs to their final names.
    let master = if hls {
        staging.write(
            "master.m3u8",
            master_playlist(&outs, &spec.renditions, src_w, src_h).as_bytes(),
        )?;
        let dir = staging.publish_dir(job.owner)?;
        Some(dir.join("master.m3u8"))
    } else {
        for o in &outs {
            staging.publish_file(&o.stage_name, &o.final_name, job.owner)?;
        }
        staging.finish();
        None
    };

    let wall = started.elapsed().as_secs_f64();
    progress(report(seen.frames, duration_s, duration_s, started));
    let outputs = outs
        .iter()
        .map(|o| describe(o, hls))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EncodeResult {
        outputs,
        master_playlist: master,
        backend,
        backend_reason,
        wall_s: wall,
        fps: seen.frames as f64 / wall.max(1e-9),
        decoded_frames: seen.frames,
        declared_frames,
        truncated: truncated.is_some(),
    })
}

/// What the decode loop has seen, checked against the limits on every frame:
/// headers can lie or be absent (a Matroska written to a pipe, a raw stream).
struct Decoded<'a> {
    display: &'a str,
    limits: &'a Limits,
    tb: Rational,
    /// Video frames decoded.
    frames: u64,
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
}

impl<'a> Decoded<'a> {
    fn new(
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
            first_ts: None,
            last_ts: None,
            max_frames: (limits.max_duration_s * MAX_PLAUSIBLE_FPS).ceil() as u64,
            segment_s: match spec.container {
                Container::Hls { segment_s } => Some(segment_s),
                Container::Mp4 => None,
            },
        }
    }

    fn over(&self, reason: String) -> EncodeError {
        EncodeError::LimitExceeded {
            path: self.display.to_owned(),
            reason,
        }
    }

    /// Decoded time from the first frame, seconds.
    fn time_s(&self) -> f64 {
        match (self.first_ts, self.last_ts) {
            (Some(a), Some(b)) => (b.saturating_sub(a)) as f64 * f64::from(self.tb),
            _ => 0.0,
        }
    }

    /// Counts a decoded frame, checking its size, the decoded time and the
    /// frame count; sets its pts from the best-effort timestamp.
    fn frame(&mut self, f: &mut frame::Video) -> Result<(), EncodeError> {
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
        // A frame without a timestamp (a raw stream) follows the last one.
        let ts = f.timestamp().or_else(|| {
            Some(
                self.last_ts
                    .map_or(0, |t| t.saturating_add(self.frame_step)),
            )
        });
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

    /// Counts the HLS segments written so far against the limit.
    fn segments(&self, outs: &[RenditionOut], _spec: &EncodeSpec) -> Result<(), EncodeError> {
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
    fn decode_error(&self, decoder: &codec::decoder::Video, e: ff::Error) -> EncodeError {
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
    fn truncation(
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

fn report(frames: u64, time: f64, duration: f64, started: Instant) -> Progress {
    Progress {
        frames,
        percent: if duration > 0.0 {
            (100.0 * time / duration).clamp(0.0, 100.0)
        } else {
            0.0
        },
        fps: frames as f64 / started.elapsed().as_secs_f64().max(1e-9),
        out_time_s: time,
    }
}

fn corrupt(display: &str, e: ff::Error) -> EncodeError {
    EncodeError::BadInput {
        path: display.to_owned(),
        reason: format!("decoding failed: {e} (corrupt or truncated)"),
    }
}

/// `<base>.mp4`, or `<base>_<label>.mp4` in a ladder.
fn mp4_name(base: &str, label: Option<&str>) -> String {
    let stem = std::path::Path::new(base)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    match label {
        Some(l) => format!("{stem}_{l}.mp4"),
        None => format!("{stem}.mp4"),
    }
}

/// How the input's display matrix says to turn its frames, as FFmpeg's CLI
/// reads it (`-autorotate`, on by default there and here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rotation {
    None,
    Clock,
    UpsideDown,
    CounterClock,
}

impl Rotation {
    fn of(stream: &format::stream::Stream) -> Rotation {
        let Some(sd) = stream
            .side_data()
            .find(|sd| sd.kind() == codec::packet::side_data::Type::DisplayMatrix)
        else {
            return Rotation::None;
        };
        let m: Vec<f64> = sd
            .data()
            .chunks_exact(4)
            .take(9)
            .map(|b| f64::from(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])) / 65536.0)
            .collect();
        if m.len() < 5 {
            return Rotation::None;
        }
        // av_display_rotation_get(), then the CLI's normalisation to [0, 360).
        let (s0, s1) = (m[0].hypot(m[3]), m[1].hypot(m[4]));
        if s0 == 0.0 || s1 == 0.0 {
            return Rotation::None;
        }
        let get = -(m[1] / s1).atan2(m[0] / s0).to_degrees();
        let mut theta = -get.round();
        theta -= 360.0 * (theta / 360.0 + 0.9 / 360.0).floor();
        match theta {
            t if (t - 90.0).abs() < 1.0 => Rotation::Clock,
            t if (t - 180.0).abs() < 1.0 => Rotation::UpsideDown,
            t if (t - 270.0).abs() < 1.0 => Rotation::CounterClock,
            _ => Rotation::None,
        }
    }

    fn filters(self) -> &'static str {
        match self {
            Rotation::None => "",
            Rotation::Clock => "transpose=clock,",
            Rotation::UpsideDown => "hflip,vflip,",
            Rotation::CounterClock => "transpose=cclock,",
        }
    }
}

/// What a video filter graph's source is configured for: the decoded frames'
/// size, pixel format and aspect. A stream that changes them mid-way gets new
/// graphs (as FFmpeg's CLI does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameShape {
    width: u32,
    height: u32,
    format: ff::format::Pixel,
    sar: Rational,
}

impl FrameShape {
    fn of_decoder(d: &codec::decoder::Video) -> Self {
        FrameShape {
            width: d.width(),
            height: d.height(),
            format: d.format(),
            sar: d.aspect_ratio(),
        }
    }

    fn of_frame(f: &frame::Video) -> Self {
        FrameShape {
            width: f.width(),
            height: f.height(),
            format: f.format(),
            sar: f.aspect_ratio(),
        }
    }
}

fn video_filter(
    shape: FrameShape,
    tb: Rational,
    rotation: Rotation,
    w: u32,
    h: u32,
) -> Result<filter::Graph, EncodeError> {
    let mut g = filter::Graph::new();
    let sar = if shape.sar.numerator() > 0 && shape.sar.denominator() > 0 {
        shape.sar
    } else {
        Rational(1, 1)
    };
    let args = format!(
        "video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect={}/{}",
        shape.width,
        shape.height,
        ff::ffi::AVPixelFormat::from(shape.format) as i32,
        tb.numerator(),
        tb.denominator(),
        sar.numerator(),
        sar.denominator()
    );
    let find = |n: &str| {
        filter::find(n).ok_or_else(|| EncodeError::Failed(format!("FFmpeg lacks the {n} filter")))
    };
    g.add(&find("buffer")?, "in", &args)
        .map_err(|e| failed("video filter input", e))?;
    g.add(&find("buffersink")?, "out", "")
        .map_err(|e| failed("video filter output", e))?;
    g.output("in", 0)
        .and_then(|p| p.input("out", 0))
        .and_then(|p| {
            p.parse(&format!(
                "{}scale={w}:{h},format=yuv420p",
                rotation.filters()
            ))
        })
        .map_err(|e| failed("video filter", e))?;
    g.validate().map_err(|e| failed("video filter", e))?;
    Ok(g)
}

/// Feeds a decoded frame to every rendition. The filter source takes the
/// frame's buffers, so every rendition but the last gets a copy.
fn feed_all(
    outs: &mut [RenditionOut],
    f: &frame::Video,
    graphs: &mut GraphInput,
    display: &str,
) -> Result<(), EncodeError> {
    let shape = FrameShape::of_frame(f);
    if shape != graphs.shape {
        if shape.width == 0 || shape.height == 0 || shape.format == ff::format::Pixel::None {
            return Err(EncodeError::BadInput {
                path: display.to_owned(),
                reason: "a decoded frame has no size or pixel format (corrupt)".into(),
            });
        }
        for o in outs.iter_mut() {
            o.graph = video_filter(shape, graphs.tb, graphs.rotation, o.width, o.height).map_err(
                |e| EncodeError::BadInput {
                    path: display.to_owned(),
                    reason: format!(
                        "its video changes to {}x{} {:?}, which cannot be scaled ({e})",
                        shape.width, shape.height, shape.format
                    ),
                },
            )?;
        }
        graphs.shape = shape;
    }
    let last = outs.len().saturating_sub(1);
    for (i, o) in outs.iter_mut().enumerate() {
        if i < last {
            push_video(o, Some(&f.clone()))?;
        } else {
            push_video(o, Some(f))?;
        }
    }
    Ok(())
}

/// Feeds one decoded frame (or the end) through a rendition's filter and
/// encoder, writing what comes out.
fn push_video(o: &mut RenditionOut, f: Option<&frame::Video>) -> Result<(), EncodeError> {
    {
        let mut src = o
            .graph
            .get("in")
            .ok_or_else(|| EncodeError::Failed("video filter input lost".into()))?;
        match f {
            Some(f) => src.source().add(f),
            None => src.source().flush(),
        }
        .map_err(|e| failed("scaling", e))?;
    }
    let mut scaled = frame::Video::empty();
    loop {
        let got = {
            let mut sink = o
                .graph
                .get("out")
                .ok_or_else(|| EncodeError::Failed("video filter output lost".into()))?;
            sink.sink().frame(&mut scaled)
        };
        if got.is_err() {
            break;
        }
        o.frames += 1;
        // The decoder's picture type (an I-frame in an all-intra source, say)
        // would force the encoder's hand; let it choose its own GOP.
        scaled.set_kind(ff::picture::Type::None);
        o.encoder
            .send_frame(&scaled)
            .map_err(|e| failed(o.encoder_name, e))?;
        drain_video(o)?;
    }
    if f.is_none() {
        o.encoder
            .send_eof()
            .map_err(|e| failed(o.encoder_name, e))?;
        drain_video(o)?;
    }
    Ok(())
}

fn drain_video(o: &mut RenditionOut) -> Result<(), EncodeError> {
    let mut p = Packet::empty();
    while o.encoder.receive_packet(&mut p).is_ok() {
        p.set_stream(0);
        if p.duration() <= 0 {
            p.set_duration(o.frame_dur);
        }
        p.rescale_ts(o.enc_tb, o.video_tb);
        p.write_interleaved(&mut o.octx)
            .map_err(|e| failed(format!("writing rendition {}", o.label), e))?;
    }
    Ok(())
}

fn aac_setup(
    outs: &mut [RenditionOut],
    ist: usize,
    ist_tb: Rational,
    par: codec::Parameters,
    kbps: u32,
) -> Result<AudioOut, EncodeError> {
    let decoder = codec::context::Context::from_parameters(par)
        .and_then(|c| c.decoder().audio())
        .map_err(|e| failed("audio decoder", e))?;
    let codec = encoder::find(codec::Id::AAC)
        .ok_or_else(|| EncodeError::Failed("no AAC encoder".into()))?;
    let layout = if decoder.channel_layout().bits() != 0 {
        decoder.channel_layout()
    } else {
        ff::ChannelLayout::default(i32::from(decoder.channels()))
    };
    let layout = if layout.channels() > 2 {
        ff::ChannelLayout::STEREO
    } else {
        layout
    };
    let mut enc = codec::context::Context::new_with_codec(codec)
        .encoder()
        .audio()
        .map_err(|e| failed("AAC encoder", e))?;
    let global = outs
        .first()
        .map(|o| {
            o.octx
                .format()
                .flags()
                .contains(format::Flags::GLOBAL_HEADER)
        })
        .unwrap_or(false);
    if global {
        enc.set_flags(codec::Flags::GLOBAL_HEADER);
    }
    enc.set_rate(decoder.rate() as i32);
    enc.set_channel_layout(layout);
    enc.set_channels(layout.channels());
    enc.set_format(ff::format::Sample::F32(ff::format::sample::Type::Planar));
    enc.set_bit_rate(kbps as usize * 1000);
    enc.set_time_base((1, decoder.rate() as i32));
    let encoder = enc.open_as(codec).map_err(|e| failed("opening AAC", e))?;
    for o in outs.iter_mut() {
        let mut ost = o
            .octx
            .add_stream(codec)
            .map_err(|e| failed("adding the audio stream", e))?;
        ost.set_parameters(&encoder);
        ost.set_time_base((1, decoder.rate() as i32));
    }
    let mut g = filter::Graph::new();
    let in_layout = if decoder.channel_layout().bits() != 0 {
        decoder.channel_layout()
    } else {
        ff::ChannelLayout::default(i32::from(decoder.channels()))
    };
    let args = format!(
        "time_base={}/{}:sample_rate={}:sample_fmt={}:channel_layout=0x{:x}",
        decoder.time_base().numerator(),
        decoder.time_base().denominator().max(1),
        decoder.rate(),
        decoder.format().name(),
        in_layout.bits()
    );
    let find = |n: &str| {
        filter::find(n).ok_or_else(|| EncodeError::Failed(format!("FFmpeg lacks the {n} filter")))
    };
    g.add(&find("abuffer")?, "in", &args)
        .map_err(|e| failed("audio filter input", e))?;
    g.add(&find("abuffersink")?, "out", "")
        .map_err(|e| failed("audio filter output", e))?;
    {
        let mut out = g
            .get("out")
            .ok_or_else(|| EncodeError::Failed("audio filter output lost".into()))?;
        out.set_sample_format(encoder.format());
        out.set_channel_layout(encoder.channel_layout());
        out.set_sample_rate(encoder.rate());
    }
    g.output("in", 0)
        .and_then(|p| p.input("out", 0))
        .and_then(|p| p.parse("anull"))
        .map_err(|e| failed("audio filter", e))?;
    g.validate().map_err(|e| failed("audio filter", e))?;
    if let Some(mut out) = g.get("out") {
        out.sink().set_frame_size(encoder.frame_size());
    }
    let enc_tb = encoder.time_base();
    Ok(AudioOut::Aac {
        ist,
        ist_tb,
        decoder,
        graph: g,
        encoder,
        enc_tb,
    })
}

fn audio_packet(
    audio: &mut AudioOut,
    outs: &mut [RenditionOut],
    si: usize,
    packet: &Packet,
) -> Result<(), EncodeError> {
    match audio {
        AudioOut::None => Ok(()),
        AudioOut::Copy { ist, ist_tb } if *ist == si => {
            for o in outs.iter_mut() {
                let Some(tb) = o.audio_tb else { continue };
                let mut p = packet.clone();
                p.set_stream(1);
                p.set_position(-1);
                p.rescale_ts(*ist_tb, tb);
                p.write_interleaved(&mut o.octx)
                    .map_err(|e| failed(format!("writing rendition {}", o.label), e))?;
            }
            Ok(())
        }
        AudioOut::Aac {
            ist,
            ist_tb,
            decoder,
            graph,
            encoder,
            enc_tb,
        } if *ist == si => {
            let mut p = packet.clone();
            p.rescale_ts(*ist_tb, decoder.time_base());
            if decoder.send_packet(&p).is_err() {
                // A damaged audio packet loses a few milliseconds, not the job.
                return Ok(());
            }
            aac_pump(decoder, graph, encoder, *enc_tb, outs, false)
        }
        _ => Ok(()),
    }
}

fn audio_flush(audio: &mut AudioOut, outs: &mut [RenditionOut]) -> Result<(), EncodeError> {
    if let AudioOut::Aac {
        decoder,
        graph,
        encoder,
        enc_tb,
        ..
    } = audio
    {
        let _ = decoder.send_eof();
        aac_pump(decoder, graph, encoder, *enc_tb, outs, true)?;
    }
    Ok(())
}

fn aac_pump(
    decoder: &mut codec::decoder::Audio,
    graph: &mut filter::Graph,
    encoder: &mut encoder::Audio,
    enc_tb: Rational,
    outs: &mut [RenditionOut],
    eof: bool,
) -> Result<(), EncodeError> {
    let mut decoded = frame::Audio::empty();
    while decoder.receive_frame(&mut decoded).is_ok() {
        let ts = decoded.timestamp();
        decoded.set_pts(ts);
        if let Some(mut src) = graph.get("in") {
            src.source()
                .add(&decoded)
                .map_err(|e| failed("audio filter", e))?;
        }
    }
    if eof && let Some(mut src) = graph.get("in") {
        let _ = src.source().flush();
    }
    let mut filtered = frame::Audio::empty();
    loop {
        let got = match graph.get("out") {
            Some(mut sink) => sink.sink().frame(&mut filtered).is_ok(),
            None => false,
        };
        if !got {
            break;
        }
        encoder
            .send_frame(&filtered)
            .map_err(|e| failed("AAC", e))?;
        aac_write(encoder, enc_tb, outs)?;
    }
    if eof {
        let _ = encoder.send_eof();
        aac_write(encoder, enc_tb, outs)?;
    }
    Ok(())
}

fn aac_write(
    encoder: &mut encoder::Audio,
    enc_tb: Rational,
    outs: &mut [RenditionOut],
) -> Result<(), EncodeError> {
    let mut p = Packet::empty();
    while encoder.receive_packet(&mut p).is_ok() {
        for o in outs.iter_mut() {
            let Some(tb) = o.audio_tb else { continue };
            let mut q = p.clone();
            q.set_stream(1);
            q.rescale_ts(enc_tb, tb);
            q.write_interleaved(&mut o.octx)
                .map_err(|e| failed(format!("writing rendition {}", o.label), e))?;
        }
    }
    Ok(())
}

/// A copied stream keeps its input codec tag, which another container may
/// reject; FFmpeg's own CLI clears it. ffmpeg-next has no setter for it.
#[allow(unsafe_code)]
fn clear_codec_tag(ost: &mut format::stream::StreamMut) {
    // SAFETY: `parameters()` points at the stream's live AVCodecParameters,
    // owned by the output context that `ost` borrows mutably; writing a plain
    // integer field cannot invalidate anything.
    unsafe {
        (*ost.parameters().as_mut_ptr()).codec_tag = 0;
    }
}

fn master_playlist(
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
fn describe(o: &RenditionOut, hls: bool) -> Result<OutputInfo, EncodeError> {
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
