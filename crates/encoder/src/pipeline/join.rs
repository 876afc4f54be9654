//! The join of a chunked encode: each rendition's chunk files (MP4, video
//! only, written by `run` with a `part: chunk` spec) stream-copied one after
//! the other into the rendition's output, and the audio encoded once from
//! the input (or copied) and muxed in, so nothing is re-encoded and no audio
//! priming gap falls on a seam.
//!
//! Timestamps: chunk `i` starts at the plan's `starts[i]`, in the input's
//! video time base counted from the video's start; each chunk file's packets
//! keep their distances from its first packet (its opening keyframe, which
//! is also its earliest frame: chunks are closed GOPs). The decode-order
//! delay an encoder gives B-frames is the same in every chunk, so decode
//! timestamps stay strictly increasing across seams. The MP4 muxer writes
//! the edit list that lets the first frame show at 0, as for one encode.

use super::audio::{aac_setup, audio_flush, audio_packet, copy_setup};
use super::decode::origins;
use super::output::master_playlist_of;
use super::{
    AudioOut, CancellationToken, EncodeError, EncodeResult, Instant, Job, Muxed, OutputInfo,
    PROGRESS_EVERY, Phase, Progress, failed, hls_options, output_names,
};
use crate::backend::Backend;
use crate::paths::{InputFile, Staging};
use crate::{Audio, Container};
use ff::{Packet, Rational, Rescale, codec, encoder, format, media};
use ffmpeg_next as ff;

/// One output being joined.
pub(super) struct JoinOut {
    label: String,
    octx: format::context::Output,
    video_tb: Rational,
    audio_tb: Option<Rational>,
    stage_name: String,
    final_name: String,
    final_path: std::path::PathBuf,
    seg_dir: Option<String>,
    frames: u64,
    width: u32,
    height: u32,
    codec: String,
    /// The last decode timestamp written, in `video_tb`.
    last_dts: Option<i64>,
    /// Chunk 0's codec parameters (SPS/PPS for H.264): every chunk must
    /// have the same, since the output stores them once.
    extradata: Vec<u8>,
}

/// A stream's codec extradata (H.264/HEVC parameter sets, AV1's config).
#[allow(unsafe_code)]
fn extradata(par: &codec::Parameters) -> Vec<u8> {
    // SAFETY: `par` wraps a live AVCodecParameters; `extradata` points at
    // `extradata_size` bytes owned by it, or is null.
    unsafe {
        let p = par.as_ptr();
        let (data, size) = ((*p).extradata, (*p).extradata_size);
        if data.is_null() || size <= 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(data, size as usize).to_vec()
        }
    }
}

impl Muxed for JoinOut {
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

/// The output of an audio part: one MP4 with only the audio.
struct AudioFile {
    octx: format::context::Output,
    audio_tb: Option<Rational>,
}

impl Muxed for AudioFile {
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
        "audio"
    }
    fn audio_index(&self) -> usize {
        0
    }
}

/// A chunked encode's audio part: the input's audio encoded once to AAC, as
/// a whole encode would (the same filter, encoder and origin), into one MP4
/// the join copies.
pub(crate) fn audio_only(
    job: &Job<'_>,
    progress: &mut dyn FnMut(Progress),
    cancel: &CancellationToken,
) -> Result<EncodeResult, EncodeError> {
    let spec = job.spec;
    let Audio::Aac { bitrate_kbps } = spec.audio else {
        return Err(EncodeError::spec("audio", "an audio part encodes AAC"));
    };
    let started = Instant::now();
    let mut src = super::open_input(job.input, job.display, job.limits, cancel)?;
    let (ist, ist_tb, par) = src
        .ctx
        .streams()
        .best(media::Type::Audio)
        .map(|s| (s.index(), s.time_base(), s.parameters()))
        .ok_or_else(|| EncodeError::BadInput {
            path: job.display.to_owned(),
            reason: "it has no audio stream".into(),
        })?;
    let v = src
        .ctx
        .streams()
        .best(media::Type::Video)
        .map_or(ist, |s| s.index());
    let starts = origins(&src.ctx, v, Some(ist));
    let names = output_names(spec, job.target);
    let final_name = names
        .first()
        .map(|(n, _)| n.clone())
        .unwrap_or_else(|| "audio.mp4".into());
    let staging = Staging::new(job.target)?;
    let stage_name = "0.mp4";
    let octx = format::output_as(&staging.path(stage_name), "mp4")
        .map_err(|e| failed("creating the audio output", e))?;
    let mut outs = [AudioFile {
        octx,
        audio_tb: None,
    }];
    let mut audio = aac_setup(&mut outs, ist, ist_tb, par, bitrate_kbps)?;
    outs[0]
        .octx
        .write_header_with(hls_options(spec, None))
        .map_err(|e| failed("writing the header of the audio output", e))?;
    outs[0].audio_tb = outs[0].octx.stream(0).map(|s| s.time_base());
    let total_s = src.ctx.duration() as f64 / f64::from(ff::ffi::AV_TIME_BASE);
    let mut last_report = Instant::now() - PROGRESS_EVERY;
    let mut p = Packet::empty();
    loop {
        if cancel.is_cancelled() {
            return Err(EncodeError::Cancelled);
        }
        match p.read(&mut src.ctx) {
            Ok(()) => {}
            Err(ff::Error::Eof) => break,
            Err(ff::Error::Exit) if cancel.is_cancelled() => return Err(EncodeError::Cancelled),
            Err(e) => return Err(failed("reading the input's audio", e)),
        }
        if p.stream() != ist {
            continue;
        }
        if let Some(o) = starts.get(ist).copied().filter(|o| *o != 0) {
            p.set_pts(p.pts().map(|t| t.saturating_sub(o)));
            p.set_dts(p.dts().map(|t| t.saturating_sub(o)));
        }
        audio_packet(&mut audio, &mut outs, ist, &p)?;
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            let at = p.pts().unwrap_or(0) as f64 * f64::from(ist_tb);
            progress(Progress {
                phase: Phase::Encode,
                bytes: 0,
                frames: 0,
                percent: if total_s > 0.0 {
                    (100.0 * at / total_s).clamp(0.0, 100.0)
                } else {
                    0.0
                },
                fps: 0.0,
                out_time_s: at,
            });
        }
    }
    audio_flush(&mut audio, &mut outs)?;
    outs[0]
        .octx
        .write_trailer()
        .map_err(|e| failed("finishing the audio output", e))?;
    let facts = super::verify::mp4_file("audio", &staging.path(stage_name))?;
    staging.publish_files(&[(stage_name, final_name.as_str())], job.owner)?;
    staging.finish();
    let wall = started.elapsed().as_secs_f64();
    Ok(EncodeResult {
        outputs: vec![OutputInfo {
            rendition: "audio".into(),
            path: job
                .target
                .display_of(&final_name)
                .to_string_lossy()
                .into_owned(),
            size_bytes: facts.size_bytes,
            duration_s: facts.duration_s,
            codec: "aac".into(),
            width: 0,
            height: 0,
            bitrate_bps: if facts.duration_s > 0.0 {
                (facts.size_bytes as f64 * 8.0 / facts.duration_s) as u64
            } else {
                0
            },
            encoder: "aac".into(),
            frames: 0,
        }],
        master_playlist: None,
        backend: Backend::Cpu,
        backend_reason: "a chunked encode's audio, encoded once".into(),
        stages: crate::hw::Stages {
            decode: crate::hw::Stage::cpu("audio only"),
            scale: crate::hw::Stage::cpu("audio only"),
            encode: crate::hw::Stage::cpu("AAC"),
        },
        wall_s: wall,
        fps: 0.0,
        decoded_frames: 0,
        declared_frames: None,
        truncated: false,
        objects: Vec::new(),
    })
}

/// The source's audio, read up to where the video has got.
struct AudioReader {
    ictx: Option<super::OpenedInput>,
    audio: AudioOut,
    origins: Vec<i64>,
    /// A packet read past the current bound, kept for the next.
    held: Option<Packet>,
    done: bool,
}

impl AudioReader {
    /// Writes the audio whose timestamps are before `until` seconds (all of
    /// it with `None`).
    fn pump(&mut self, until: Option<f64>, outs: &mut [JoinOut]) -> Result<(), EncodeError> {
        let (Some(ist), Some(ictx)) = (self.audio.input(), self.ictx.as_mut()) else {
            return Ok(());
        };
        let tb = ictx
            .ctx
            .stream(ist)
            .map(|s| s.time_base())
            .unwrap_or(Rational::new(1, 1));
        loop {
            let packet = match self.held.take() {
                Some(p) => p,
                None if self.done => return Ok(()),
                None => {
                    let mut p = Packet::empty();
                    match p.read(&mut ictx.ctx) {
                        Ok(()) => {}
                        Err(ff::Error::Eof) => {
                            self.done = true;
                            return Ok(());
                        }
                        Err(e) => return Err(failed("reading the input's audio", e)),
                    }
                    if p.stream() != ist {
                        continue;
                    }
                    if let Some(o) = self.origins.get(ist).copied().filter(|o| *o != 0) {
                        p.set_pts(p.pts().map(|t| t.saturating_sub(o)));
                        p.set_dts(p.dts().map(|t| t.saturating_sub(o)));
                    }
                    p
                }
            };
            if let (Some(u), Some(t)) = (until, packet.pts().or(packet.dts()))
                && t as f64 * f64::from(tb) >= u
            {
                self.held = Some(packet);
                return Ok(());
            }
            audio_packet(&mut self.audio, outs, ist, &packet)?;
        }
    }
}

/// Joins `chunks` (per chunk, one file per rendition in the spec's order)
/// into the spec's outputs, published as `run` publishes.
pub(crate) fn run(
    job: &Job<'_>,
    chunks: &[Vec<InputFile>],
    audio_file: Option<&InputFile>,
    progress: &mut dyn FnMut(Progress),
    cancel: &CancellationToken,
) -> Result<EncodeResult, EncodeError> {
    let spec = job.spec;
    let Some(spool_encode_spec::Part::Join {
        starts,
        time_base,
        video_offset,
        ..
    }) = &spec.part
    else {
        return Err(EncodeError::Failed("not a join".into()));
    };
    let started = Instant::now();
    let plan_tb = Rational::new(time_base[0], time_base[1]);
    let hls = matches!(spec.container, Container::Hls { .. });
    let names = output_names(spec, job.target);
    let mut staging = Staging::new(job.target)?;

    // The audio: the audio part's file (its timestamps final), the input
    // (copied), or none.
    let (src, astream, all) = match (audio_file, &spec.audio) {
        (Some(file), _) => {
            let src = super::input::open_audio_input(
                file,
                "the chunked encode's audio",
                job.limits,
                cancel,
            )?;
            let a = src
                .ctx
                .streams()
                .best(media::Type::Audio)
                .map(|s| (s.index(), s.time_base(), s.parameters()));
            let zeros = vec![0; src.ctx.nb_streams() as usize];
            (Some(src), a, zeros)
        }
        (None, Audio::Copy) => {
            let src = super::open_input(job.input, job.display, job.limits, cancel)?;
            let a = src
                .ctx
                .streams()
                .best(media::Type::Audio)
                .map(|s| (s.index(), s.time_base(), s.parameters()));
            let v = src
                .ctx
                .streams()
                .best(media::Type::Video)
                .map(|s| s.index())
                .unwrap_or(0);
            let all = origins(&src.ctx, v, a.as_ref().map(|a| a.0));
            (Some(src), a, all)
        }
        (None, _) => (None, None, Vec::new()),
    };
    // The chunks count from the video's start; the outputs from the
    // earliest of video and audio, `video_offset` before it.
    let shift = *video_offset;

    // One output per rendition, its video stream copied from chunk 0's.
    let first = chunks
        .first()
        .ok_or_else(|| EncodeError::Failed("no chunks".into()))?;
    let mut outs = Vec::with_capacity(spec.renditions.len());
    for (i, r) in spec.renditions.iter().enumerate() {
        let label = r.label();
        let file = first.get(i).ok_or_else(|| {
            EncodeError::Failed(format!("chunk 0 has no file for rendition {label}"))
        })?;
        let chunk = super::open_input(
            file,
            &format!("chunk 0 of rendition {label}"),
            job.limits,
            cancel,
        )?;
        let st = chunk
            .ctx
            .streams()
            .best(media::Type::Video)
            .ok_or_else(|| {
                EncodeError::Failed(format!("chunk 0 of rendition {label} has no video"))
            })?;
        let par = st.parameters();
        let extradata = extradata(&par);
        let super::video::RenditionPaths {
            staged: stage,
            stage_name,
            final_name,
            final_path,
            seg_dir,
        } = super::video::rendition_paths(i, &label, hls, &names, job, &mut staging)?;
        let mut octx = format::output_as(&stage, if hls { "hls" } else { "mp4" })
            .map_err(|e| failed(format!("creating the output of rendition {label}"), e))?;
        let (width, height, codec) = {
            let ctx = codec::context::Context::from_parameters(par.clone())
                .map_err(|e| failed("reading chunk 0's video parameters", e))?;
            let v = ctx
                .decoder()
                .video()
                .map_err(|e| failed("reading chunk 0's video parameters", e))?;
            (v.width(), v.height(), v.id().name().to_owned())
        };
        {
            let mut ost = octx
                .add_stream(encoder::find(codec::Id::None))
                .map_err(|e| failed("adding the video stream", e))?;
            ost.set_parameters(par);
            ost.set_time_base(st.time_base());
            super::audio::clear_codec_tag(&mut ost);
        }
        outs.push(JoinOut {
            label,
            octx,
            video_tb: st.time_base(),
            audio_tb: None,
            stage_name,
            final_name,
            final_path,
            seg_dir,
            frames: 0,
            width,
            height,
            codec,
            last_dts: None,
            extradata,
        });
    }

    // Copied either way: the audio part encoded it once already.
    let audio = match astream {
        None => AudioOut::None,
        Some((ist, ist_tb, par)) => copy_setup(&mut outs, ist, ist_tb, par)?,
    };
    for o in &mut outs {
        o.octx
            .write_header_with(hls_options(spec, o.seg_dir.as_deref()))
            .map_err(|e| failed(format!("writing the header of rendition {}", o.label), e))?;
        o.video_tb = o
            .octx
            .stream(0)
            .map(|s| s.time_base())
            .unwrap_or(o.video_tb);
        o.audio_tb = o.octx.stream(1).map(|s| s.time_base());
    }
    let mut reader = AudioReader {
        ictx: src,
        audio,
        origins: all,
        held: None,
        done: false,
    };

    let total = chunks.len();
    let mut last_report = Instant::now() - PROGRESS_EVERY;
    for (c, files) in chunks.iter().enumerate() {
        if cancel.is_cancelled() {
            return Err(EncodeError::Cancelled);
        }
        let start = starts
            .get(c)
            .copied()
            .ok_or_else(|| EncodeError::Failed(format!("no start for chunk {c}")))?
            + shift;
        // Audio up to this chunk's end first: the interleaving queue then
        // holds little audio, never a chunk's video.
        let until = starts
            .get(c + 1)
            .map(|e| (e + shift) as f64 * f64::from(plan_tb));
        reader.pump(until, &mut outs)?;
        for (o, file) in outs.iter_mut().zip(files) {
            copy_chunk(o, file, c, start, plan_tb, job, cancel)?;
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            progress(Progress {
                phase: Phase::Encode,
                bytes: 0,
                frames: outs.first().map_or(0, |o| o.frames),
                percent: 100.0 * (c + 1) as f64 / total as f64,
                fps: 0.0,
                out_time_s: until.unwrap_or(0.0),
            });
        }
    }
    reader.pump(None, &mut outs)?;
    audio_flush(&mut reader.audio, &mut outs)?;
    for o in &mut outs {
        o.octx
            .write_trailer()
            .map_err(|e| failed(format!("finishing rendition {}", o.label), e))?;
    }
    let facts = outs
        .iter()
        .map(|o| match &o.seg_dir {
            Some(dir) => super::verify::hls(&o.label, dir),
            None => super::verify::mp4_file(&o.label, &staging.path(&o.stage_name)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let master = if hls {
        let (w, h) = (
            outs.first().map_or(0, |o| o.width),
            outs.first().map_or(0, |o| o.height),
        );
        let labels: Vec<String> = outs.iter().map(|o| o.label.clone()).collect();
        staging.write(
            "master.m3u8",
            master_playlist_of(&labels, &spec.renditions, w, h).as_bytes(),
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
    let frames = outs.first().map_or(0, |o| o.frames);
    let outputs = outs
        .iter()
        .zip(&facts)
        .map(|(o, f)| OutputInfo {
            rendition: o.label.clone(),
            path: o.final_path.to_string_lossy().into_owned(),
            size_bytes: f.size_bytes,
            duration_s: f.duration_s,
            codec: o.codec.clone(),
            width: o.width,
            height: o.height,
            bitrate_bps: if f.duration_s > 0.0 {
                (f.size_bytes as f64 * 8.0 / f.duration_s) as u64
            } else {
                0
            },
            encoder: format!("joined from {total} chunks"),
            frames: o.frames,
        })
        .collect();
    Ok(EncodeResult {
        outputs,
        master_playlist: master,
        backend: Backend::Cpu,
        backend_reason: format!("a join: {total} chunks stream-copied, no video encoded"),
        stages: crate::hw::Stages {
            decode: crate::hw::Stage::cpu("the join decodes only the audio"),
            scale: crate::hw::Stage::cpu("the chunks were scaled"),
            encode: crate::hw::Stage::cpu("the chunks were encoded; the join copies them"),
        },
        wall_s: wall,
        fps: frames as f64 / wall.max(1e-9),
        decoded_frames: frames,
        declared_frames: None,
        truncated: false,
        objects: Vec::new(),
    })
}

/// Copies chunk `c`'s packets for one rendition, its first packet placed at
/// `start` (in the plan's time base `plan_tb`).
fn copy_chunk(
    o: &mut JoinOut,
    file: &InputFile,
    c: usize,
    start: i64,
    plan_tb: Rational,
    job: &Job<'_>,
    cancel: &CancellationToken,
) -> Result<(), EncodeError> {
    let what = format!("chunk {c} of rendition {}", o.label);
    let mut chunk = super::open_input(file, &what, job.limits, cancel)?;
    let (si, tb, rate, par) = chunk
        .ctx
        .streams()
        .best(media::Type::Video)
        .map(|s| (s.index(), s.time_base(), s.avg_frame_rate(), s.parameters()))
        .ok_or_else(|| EncodeError::Failed(format!("{what} has no video")))?;
    // Parameters stored once for the whole output: a chunk encoded with
    // others (NVENC on one worker, x264 on another, under
    // `hardware: auto`) would decode wrongly.
    if extradata(&par) != o.extradata {
        return Err(EncodeError::InvalidSpec {
            field: "hardware".into(),
            reason: format!(
                "{what} was encoded with other codec parameters than chunk 0 (chunks from NVENC and CPU workers, or from different encoder builds, cannot be joined): use \"hardware\": \"cpu\" or \"nvenc\" for a chunked encode on a mixed fleet"
            ),
        });
    }
    // A chunk file's last sample may read back without a duration; the
    // MP4 muxer would then end the output's edit list a frame early.
    let frame_dur = if rate.numerator() > 0 && rate.denominator() > 0 {
        1i64.rescale(rate.invert(), tb).max(1)
    } else {
        0
    };
    let base = start.rescale(plan_tb, tb);
    let mut offset: Option<i64> = None;
    let mut p = Packet::empty();
    loop {
        if cancel.is_cancelled() {
            return Err(EncodeError::Cancelled);
        }
        match p.read(&mut chunk.ctx) {
            Ok(()) => {}
            Err(ff::Error::Eof) => break,
            Err(e) => return Err(failed(format!("reading {what}"), e)),
        }
        if p.stream() != si {
            continue;
        }
        let Some(pts) = p.pts() else {
            return Err(EncodeError::Failed(format!(
                "{what}: a packet without a timestamp"
            )));
        };
        let off = *offset.get_or_insert(base - pts);
        p.set_pts(Some(pts + off));
        p.set_dts(p.dts().map(|d| d + off));
        if p.duration() <= 0 {
            p.set_duration(frame_dur);
        }
        p.set_stream(0);
        p.set_position(-1);
        p.rescale_ts(tb, o.video_tb);
        if let Some(d) = p.dts() {
            if o.last_dts.is_some_and(|l| d <= l) {
                return Err(EncodeError::Failed(format!(
                    "{what}: its timestamps overlap the chunk before (decode time {d} after {:?}); the chunks were encoded with different settings",
                    o.last_dts
                )));
            }
            o.last_dts = Some(d);
        }
        o.frames += 1;
        p.write_interleaved(&mut o.octx)
            .map_err(|e| failed(format!("writing rendition {}", o.label), e))?;
    }
    if offset.is_none() {
        return Err(EncodeError::Failed(format!("{what} holds no video")));
    }
    Ok(())
}
