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
//!
//! Where things are: [`input`] opens and probes (`probe_video`), [`decode`]
//! runs the read loop (`read_all`) and checks limits on what is decoded,
//! [`rotation`] reads the display matrix, [`video`] builds each rendition
//! (`open_rendition`) and runs the ladder, [`audio`] the audio, [`output`]
//! names, lists and reads back the outputs. This file holds the result types
//! and `run`, which wires the phases in order: probe, stage, open renditions
//! and audio, write headers, read, flush, check for truncation, publish. It
//! is over 400 lines because the types shared by every phase live here.

mod audio;
mod decode;
mod input;
mod join;
mod output;
mod plan;
mod rotation;
mod verify;
mod video;

use audio::{aac_setup, audio_flush, copy_setup};
use decode::{Decoded, Reading, Sinks, read_all};
pub(crate) use input::open_input;
use input::{VideoSource, probe_video};
pub(crate) use join::{audio_only, run as join};
use output::{describe, master_playlist, mp4_name};
pub(crate) use plan::keyframes;
use rotation::Rotation;
use video::{RenditionCtx, open_rendition, push_video};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ff::{Dictionary, Rational, codec, encoder, filter, format, media};
use ffmpeg_next as ff;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, encoder_name, rendition_options};
use crate::error::EncodeError;
use crate::paths::{InputFile, OutputTarget, Staging};
use crate::{Audio, Container, EncodeSpec, Limits};

/// At most this many progress reports a second.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Keyframe interval when the spec sets none: 2 s divides common HLS segment
/// lengths.
const DEFAULT_KEYFRAME_S: f64 = 2.0;
/// A read that keeps answering EAGAIN this many times in a row is an error,
/// not a source catching up (a local file never answers EAGAIN for long).
const MAX_EAGAIN: u32 = 1000;
/// How long to wait before reading again after EAGAIN.
const EAGAIN_PAUSE: Duration = Duration::from_millis(5);
/// What a job is doing when it reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Phase {
    /// Fetching the input from object storage (or http).
    Download,
    /// Decoding and encoding.
    Encode,
    /// Uploading the outputs to object storage.
    Upload,
}

/// Progress of a running encode.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Progress {
    /// The phase; `percent` is of this phase.
    pub phase: Phase,
    /// Bytes moved so far in a download or upload phase (0 while encoding).
    pub bytes: u64,
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
    /// Where the MP4 file, or the HLS rendition playlist, is: a local
    /// path, or `s3://bucket/key` for an output in object storage.
    pub path: String,
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
    pub master_playlist: Option<String>,
    /// Where it ran.
    pub backend: Backend,
    /// Why it ran there (e.g. why not on NVENC).
    pub backend_reason: String,
    /// Where each stage ran (decode, scale, encode), and why there.
    pub stages: crate::hw::Stages,
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
    /// For outputs in object storage: every object written, in upload order,
    /// with its size and ETag (`outputs[].path` and `master_playlist` then
    /// hold `s3://` URIs). Empty for local outputs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<spool_storage::StoredObject>,
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
    /// The attempt that owns the outputs (replaces its own job's earlier
    /// ones).
    pub owner: Option<&'a crate::OutputOwner>,
    /// The worker's limits.
    pub limits: &'a Limits,
    /// `SPOOL_GPU_DECODE`.
    pub gpu_decode: crate::GpuDecode,
    /// The first NVIDIA GPU discovery found, if any.
    pub gpu_found: Option<u32>,
    /// Threads for the video decoder and each CPU encoder (0: FFmpeg's
    /// choice, one per core).
    pub threads: usize,
}

/// FFmpeg's error `e` while doing `what`, kept as the error's source.
fn failed(what: impl std::fmt::Display, e: ff::Error) -> EncodeError {
    EncodeError::Ffmpeg {
        context: what.to_string(),
        source: e,
    }
}

/// An opened input and the cancellation token its interrupt callback reads;
/// the context is declared first so it is dropped (closed) before the token.
pub(crate) struct OpenedInput {
    /// FFmpeg's demuxer.
    pub ctx: format::context::Input,
    /// Read by [`interrupted`] while FFmpeg blocks; must outlive `ctx`.
    _token: Box<CancellationToken>,
}

/// The source side every rendition's filter graph is built for.
struct GraphInput {
    shape: FrameShape,
    tb: Rational,
    rotation: Rotation,
    /// The CUDA device the input is decoded on, when NVDEC decodes it:
    /// where CUDA frames are scaled and uploaded.
    device: Option<crate::hw::HwDevice>,
    /// The GPU `scale_cuda` would run on, or why it cannot.
    scale_cuda: Result<u32, String>,
}

/// One rendition's filter, encoder and muxer.
struct RenditionOut {
    label: String,
    /// The output frame size.
    width: u32,
    height: u32,
    encoder_name: &'static str,
    graph: filter::Graph,
    /// Where the current graph scales.
    scale: crate::hw::Stage,
    /// Whether the encoder takes CUDA frames (NVENC from GPU memory).
    gpu_in: bool,
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

/// An output the audio side writes to: a rendition being encoded, or one
/// being joined from chunks.
pub(super) trait Muxed {
    /// The muxer.
    fn octx(&mut self) -> &mut format::context::Output;
    /// The muxer, to read.
    fn octx_ref(&self) -> &format::context::Output;
    /// The audio stream's time base once the header is written.
    fn audio_tb(&self) -> Option<Rational>;
    /// The rendition's name, for messages.
    fn label(&self) -> &str;
    /// The audio stream's index in the output (after the video).
    fn audio_index(&self) -> usize {
        1
    }
}

impl Muxed for RenditionOut {
    fn octx(&mut self) -> &mut format::context::Output {
        &mut self.octx
    }
    fn octx_ref(&self) -> &format::context::Output {
        &self.octx
    }
    fn audio_tb(&self) -> Option<Rational> {
        self.audio_tb
    }
    fn label(&self) -> &str {
        &self.label
    }
}

/// The audio side: decode + AAC encode once, or copy.
enum AudioOut {
    None,
    Copy {
        ist: usize,
        ist_tb: Rational,
        /// The last dts written, in `ist_tb`: a packet that does not move
        /// forward is dropped (the muxer would refuse it).
        last_dts: Option<i64>,
    },
    Aac {
        ist: usize,
        ist_tb: Rational,
        decoder: codec::decoder::Audio,
        graph: filter::Graph,
        encoder: encoder::Audio,
        enc_tb: Rational,
        /// Where the next decoded frame starts, in the decoder's time base.
        next_ts: Option<i64>,
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

/// Refuses what a spec asks for beyond the operator's cost limits, before
/// any encoder opens: a rendition scaled up more than `max_upscale` per
/// side, and CPU encodes whose estimated memory is over
/// `max_encode_memory` (a 48 KB upload asked for as eight 8K `slowest`
/// renditions would need about 40 GB).
fn check_cost(
    spec: &EncodeSpec,
    src_w: u32,
    src_h: u32,
    limits: &Limits,
    display: &str,
    backend: Backend,
) -> Result<(), EncodeError> {
    let over = |reason: String| EncodeError::LimitExceeded {
        path: display.to_owned(),
        reason,
    };
    let mut sized = Vec::with_capacity(spec.renditions.len());
    for r in &spec.renditions {
        let (w, h) = r.size_for(src_w, src_h);
        let up =
            (f64::from(w) / f64::from(src_w.max(1))).max(f64::from(h) / f64::from(src_h.max(1)));
        if up > limits.max_upscale {
            return Err(over(format!(
                "rendition {} would be {w}x{h} from a {src_w}x{src_h} input, {up:.1}x per side; at most {}x (SPOOL_MAX_UPSCALE)",
                r.label(),
                limits.max_upscale
            )));
        }
        sized.push((r, w, h));
    }
    if backend == Backend::Cpu {
        let need = spool_encode_spec::encode_memory(&sized);
        if need > limits.max_encode_memory {
            return Err(over(format!(
                "these renditions would need about {} MiB to encode on the CPU (frame sizes times the frames their presets keep in flight); at most {} MiB (SPOOL_MAX_ENCODE_MEMORY): use smaller sizes, faster presets or fewer renditions",
                need >> 20,
                limits.max_encode_memory >> 20
            )));
        }
    }
    Ok(())
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
    let decode_gpu = match (job.gpu_decode, backend, job.gpu_found) {
        (crate::GpuDecode::Off, ..) => Err("SPOOL_GPU_DECODE=off".to_owned()),
        (_, Backend::Nvenc { gpu }, _) => Ok(gpu),
        (crate::GpuDecode::Auto, Backend::Cpu, Some(gpu)) => Ok(gpu),
        (crate::GpuDecode::Auto, Backend::Cpu, None) => {
            Err("no NVIDIA GPU was found (SPOOL_GPU_DECODE=auto)".to_owned())
        }
        (crate::GpuDecode::On, Backend::Cpu, gpu) => Ok(gpu.unwrap_or(0)),
    };
    let mut src = probe_video(ictx, display, limits, spec, decode_gpu.clone(), job.threads)?;
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

    let device = src.device.take();
    // A device is open only where NVDEC decodes, on the GPU `decode_gpu` names.
    let scale_cuda = match (&device, decode_gpu) {
        (Some(_), Ok(gpu)) if filter::find("scale_cuda").is_some() => Ok(gpu),
        (Some(_), Ok(_)) => Err("the linked FFmpeg has no scale_cuda filter".to_owned()),
        _ => Err("the frames are not on the GPU".to_owned()),
    };
    let mut graphs = GraphInput {
        shape: FrameShape::of_decoder(&src.decoder),
        tb: src.tb,
        rotation: src.rotation,
        device,
        scale_cuda,
    };
    check_cost(spec, src.src_w, src.src_h, limits, display, backend)?;
    let mut outs = Vec::with_capacity(spec.renditions.len());
    {
        let ctx = RenditionCtx {
            job,
            backend,
            hls,
            names: &names,
            src: &src,
            graphs: &graphs,
        };
        for (i, r) in spec.renditions.iter().enumerate() {
            outs.push(open_rendition(i, r, &ctx, &mut staging)?);
        }
    }

    let audio_codec = astream.as_ref().map(|(_, _, par)| par.id().name());
    let mut audio = match (&spec.audio, astream) {
        (_, None) | (Audio::None, _) => AudioOut::None,
        (Audio::Copy, Some((ist, ist_tb, par))) => copy_setup(&mut outs, ist, ist_tb, par)?,
        (Audio::Aac { bitrate_kbps }, Some((ist, ist_tb, par))) => {
            aac_setup(&mut outs, ist, ist_tb, par, *bitrate_kbps)?
        }
    };

    for o in &mut outs {
        let hopts = hls_options(spec, o.seg_dir.as_deref());
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
    let mut seen = Decoded::new(display, limits, src.tb, src.frame_rate, spec);
    let range = chunk_range(spec, src.tb)?;
    let duration_s = match range {
        Some((start, end)) => {
            let end = end.map_or(src.duration_s, |e| e as f64 * f64::from(src.tb));
            (end - start as f64 * f64::from(src.tb)).max(0.0)
        }
        None => src.duration_s,
    };
    let (read_error, range_end) = read_all(
        ictx,
        src.index,
        &mut src.decoder,
        &mut seen,
        Sinks {
            graphs: &mut graphs,
            outs: &mut outs,
            audio: &mut audio,
        },
        Reading {
            job,
            duration_s,
            started,
            progress,
            cancel,
            range,
        },
    )?;
    if seen.frames == 0 {
        return Err(EncodeError::BadInput {
            path: display.into(),
            reason: match read_error {
                Some(e) => format!("no video frame could be decoded (reading failed: {e})"),
                None => "no video frame could be decoded (corrupt or not video)".into(),
            },
        });
    }
    let truncated = match (range, range_end) {
        // A chunk: the whole input is not read, so only a read error or an
        // input that ends before the chunk's end says it is cut short.
        (Some(_), decode::RangeEnd::Short) => Some(format!(
            "the input ended after {:.1} s of the chunk, before its end",
            seen.time_s()
        )),
        (Some(_), _) => read_error.map(|e| {
            format!(
                "reading stopped after {} frames of the chunk: {e}",
                seen.frames
            )
        }),
        (None, _) => seen.truncation(read_error, src.declared_frames, src.video_duration_s),
    };
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
    seen.segments(&outs)?;
    let facts = verify::outputs(&outs, &|o| staging.path(&o.stage_name))?;

    // Publish: move the staged outputs to their final names.
    let master = if hls {
        staging.write(
            "master.m3u8",
            master_playlist(&outs, &spec.renditions, src.src_w, src.src_h).as_bytes(),
        )?;
        let dir = staging.publish_dir(job.owner)?;
        Some(dir.join("master.m3u8").to_string_lossy().into_owned())
    } else {
        let files: Vec<(&str, &str)> = outs
            .iter()
            .map(|o| (o.stage_name.as_str(), o.final_name.as_str()))
            .collect();
        staging.publish_files(&files, job.owner)?;
        staging.finish();
        None
    };

    let wall = started.elapsed().as_secs_f64();
    progress(report(seen.frames, duration_s, duration_s, started));
    let outputs = outs
        .iter()
        .zip(&facts)
        .map(|(o, f)| describe(o, *f))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EncodeResult {
        outputs,
        master_playlist: master,
        stages: crate::hw::Stages {
            decode: match (src.decode.on, seen.gpu_frames) {
                (crate::hw::Device::Gpu, 0) => crate::hw::Stage::cpu(
                    "NVDEC did not take this stream (its profile or pixel format); decoded on the CPU",
                ),
                (crate::hw::Device::Gpu, n) if n < seen.frames => crate::hw::Stage::gpu(format!(
                    "{}, {n} of {} frames",
                    src.decode.why, seen.frames
                )),
                _ => src.decode.clone(),
            },
            scale: outs
                .iter()
                .map(|o| &o.scale)
                .find(|s| s.on == crate::hw::Device::Cpu)
                .or(outs.first().map(|o| &o.scale))
                .cloned()
                .unwrap_or_else(|| crate::hw::Stage::cpu("no rendition")),
            encode: match backend {
                Backend::Cpu => crate::hw::Stage::cpu(backend_reason.clone()),
                Backend::Nvenc { .. } if outs.iter().all(|o| o.gpu_in) => {
                    crate::hw::Stage::gpu(format!("{backend_reason}; from frames in GPU memory"))
                }
                Backend::Nvenc { .. } => crate::hw::Stage::gpu(format!(
                    "{backend_reason}; frames uploaded from system memory"
                )),
            },
        },
        backend,
        backend_reason,
        wall_s: wall,
        fps: seen.frames as f64 / wall.max(1e-9),
        decoded_frames: seen.frames,
        declared_frames: src.declared_frames,
        truncated: truncated.is_some(),
        objects: Vec::new(),
    })
}

/// The muxer options of an output: HLS's segmenting, or MP4's index first.
fn hls_options(spec: &EncodeSpec, seg_dir: Option<&str>) -> Dictionary<'static> {
    let mut hopts = Dictionary::new();
    if let Container::Hls { segment_s } = spec.container {
        hopts.set("hls_time", &format!("{segment_s}"));
        hopts.set("hls_playlist_type", "vod");
        hopts.set("hls_list_size", "0");
        // spool's own pattern in spool's own directory: the only name
        // FFmpeg expands.
        let dir = seg_dir.unwrap_or_default();
        hopts.set("hls_segment_filename", &format!("{dir}/seg_%05d.ts"));
    } else {
        hopts.set("movflags", "+faststart");
    }
    hopts
}

/// A chunk's range of video timestamps in the decoder's time base `tb`,
/// from the spec's `part`; `None` for a whole encode.
fn chunk_range(spec: &EncodeSpec, tb: Rational) -> Result<Option<(i64, Option<i64>)>, EncodeError> {
    let Some(spool_encode_spec::Part::Chunk {
        start,
        end,
        time_base,
        ..
    }) = &spec.part
    else {
        return Ok(None);
    };
    use ff::Rescale;
    let from = Rational::new(time_base[0], time_base[1]);
    if from == tb {
        return Ok(Some((*start, *end)));
    }
    Ok(Some((
        start.rescale(from, tb),
        end.map(|e| e.rescale(from, tb)),
    )))
}

fn report(frames: u64, time: f64, duration: f64, started: Instant) -> Progress {
    Progress {
        phase: Phase::Encode,
        bytes: 0,
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
