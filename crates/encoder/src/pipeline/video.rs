//! The video ladder: one decoded frame through each rendition's filter graph
//! (rebuilt when the stream changes shape) and encoder into its muxer.

use super::{
    Backend, DEFAULT_KEYFRAME_S, EncodeError, FrameShape, GraphInput, Job, RenditionOut, Rotation,
    Staging, VideoSource, encoder_name, failed, rendition_options,
};
use crate::hw::Stage;
use ff::{Dictionary, Packet, Rational, codec, encoder, filter, format, frame};
use ffmpeg_next as ff;

impl FrameShape {
    pub(super) fn of_decoder(d: &codec::decoder::Video) -> Self {
        FrameShape {
            width: d.width(),
            height: d.height(),
            format: d.format(),
            sar: d.aspect_ratio(),
        }
    }

    pub(super) fn of_frame(f: &frame::Video) -> Self {
        FrameShape {
            width: f.width(),
            height: f.height(),
            format: f.format(),
            sar: f.aspect_ratio(),
        }
    }
}

/// The filter chain from a decoded frame to a rendition's encoder, and where
/// its scaling runs.
///
/// `cuda` is the system-memory format of the input's CUDA frames (`None`:
/// the frames are in system memory); `to_gpu` says the encoder takes CUDA
/// frames (NVENC from GPU memory). CUDA frames are scaled by `scale_cuda`
/// (into a pool of its own, `passthrough=0`, so NVENC never holds the
/// decoder's few surfaces) unless `scale_cuda` says why not or the input is
/// rotated; then they are copied to system memory and scaled there.
/// Frames in system memory going to NVENC's GPU input are uploaded last.
pub(super) fn chain(
    cuda: Option<ff::format::Pixel>,
    to_gpu: bool,
    rotation: Rotation,
    w: u32,
    h: u32,
    scale_cuda: Result<u32, &str>,
) -> (String, Stage) {
    let cpu_out = if to_gpu {
        "format=nv12,hwupload"
    } else {
        "format=yuv420p"
    };
    let rot = rotation.filters();
    match (cuda, scale_cuda) {
        (Some(_), Ok(gpu)) if rotation == Rotation::None => {
            let (format, tail) = if to_gpu {
                ("nv12", "")
            } else {
                ("yuv420p", ",hwdownload,format=yuv420p")
            };
            (
                format!("scale_cuda=w={w}:h={h}:format={format}:passthrough=0{tail}"),
                Stage::gpu(format!("scale_cuda on GPU {gpu}")),
            )
        }
        (Some(sw), scale) => {
            let why = match scale {
                Err(why) => why.to_owned(),
                Ok(_) => format!(
                    "the input is rotated ({}) and the linked FFmpeg has no CUDA transpose filter",
                    rot.trim_end_matches(',')
                ),
            };
            let sw = sw.descriptor().map_or("nv12", |d| d.name());
            (
                format!("hwdownload,format={sw},{rot}scale={w}:{h},{cpu_out}"),
                Stage::cpu(format!(
                    "{why}; frames copied from the GPU and scaled on the CPU"
                )),
            )
        }
        (None, _) => (
            format!("{rot}scale={w}:{h},{cpu_out}"),
            Stage::cpu(if to_gpu {
                "the frames were decoded on the CPU; scaled there and uploaded for NVENC"
            } else {
                "the frames were decoded on the CPU"
            }),
        ),
    }
}

/// Builds a rendition's filter graph for frames of `shape` (`frame`: one of
/// them, whose frames context a CUDA source needs), falling back to CPU
/// scaling when the GPU chain does not configure.
pub(super) fn video_filter(
    shape: FrameShape,
    frame: Option<&frame::Video>,
    gi: &GraphInput,
    w: u32,
    h: u32,
    to_gpu: bool,
) -> Result<(filter::Graph, Stage), EncodeError> {
    // Frames on a device (CUDA in the pipeline) carry a frames context
    // saying what their system-memory copy is.
    let cuda = frame.and_then(crate::hw::sw_format);
    if cuda.is_none() && shape.format == ff::format::Pixel::CUDA {
        return Err(EncodeError::Failed(
            "a CUDA frame came without its frames context".into(),
        ));
    }
    let scale_cuda = gi.scale_cuda.as_ref().copied().map_err(String::as_str);
    let (desc, stage) = chain(cuda, to_gpu, gi.rotation, w, h, scale_cuda);
    let build = |desc: &str| {
        let mut g = parse_graph(shape, gi.tb, frame, gi.device.as_ref(), desc)?;
        g.validate().map_err(|e| failed("video filter", e))?;
        Ok::<_, EncodeError>(g)
    };
    match build(&desc) {
        Ok(g) => Ok((g, stage)),
        Err(e) if stage.on == crate::hw::Device::Gpu => {
            let why = format!("scale_cuda failed ({e})");
            let (desc, stage) = chain(cuda, to_gpu, gi.rotation, w, h, Err(&why));
            Ok((build(&desc)?, stage))
        }
        Err(e) => Err(e),
    }
}

/// A graph `buffer` → `desc` → `buffersink`, every filter created and
/// initialised with its options, not yet configured (linked formats).
fn parse_graph(
    shape: FrameShape,
    tb: Rational,
    frame: Option<&frame::Video>,
    device: Option<&crate::hw::HwDevice>,
    desc: &str,
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
    if let Some(f) = frame.filter(|f| crate::hw::sw_format(f).is_some()) {
        let mut src = g
            .get("in")
            .ok_or_else(|| EncodeError::Failed("video filter input lost".into()))?;
        crate::hw::source_frames(&mut src, f).map_err(|e| failed("video filter input", e))?;
    }
    g.add(&find("buffersink")?, "out", "")
        .map_err(|e| failed("video filter output", e))?;
    g.output("in", 0)
        .and_then(|p| p.input("out", 0))
        .and_then(|p| p.parse(desc))
        .map_err(|e| failed("video filter", e))?;
    if let Some(device) = device {
        crate::hw::filters_device(&mut g, device);
    }
    Ok(g)
}

/// Feeds a decoded frame to every rendition. The filter source takes the
/// frame's buffers, so every rendition but the last gets a new reference to
/// them ([`crate::hw::share`]: no copy, and a CUDA frame stays on the GPU).
pub(super) fn feed_all(
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
            let (graph, stage) = video_filter(shape, Some(f), graphs, o.width, o.height, o.gpu_in)
                .map_err(|e| {
                    if crate::hw::sw_format(f).is_some() {
                        // Frames in GPU memory that neither scale_cuda nor
                        // the copy out could take: the GPU's fault, not the
                        // input's (retryable, maybe on another node).
                        EncodeError::Failed(format!(
                            "scaling the frames NVDEC decoded for rendition {}: {e}",
                            o.label
                        ))
                    } else {
                        EncodeError::BadInput {
                            path: display.to_owned(),
                            reason: format!(
                                "its video changes to {}x{} {:?}, which cannot be scaled ({e})",
                                shape.width, shape.height, shape.format
                            ),
                        }
                    }
                })?;
            o.graph = graph;
            o.scale = stage;
        }
        graphs.shape = shape;
    }
    let last = outs.len().saturating_sub(1);
    for (i, o) in outs.iter_mut().enumerate() {
        if i < last {
            let shared =
                crate::hw::share(f).map_err(|e| failed("referencing a decoded frame", e))?;
            push_video(o, Some(&shared))?;
        } else {
            push_video(o, Some(f))?;
        }
    }
    Ok(())
}

/// Feeds one decoded frame (or the end) through a rendition's filter and
/// encoder, writing what comes out.
pub(super) fn push_video(
    o: &mut RenditionOut,
    f: Option<&frame::Video>,
) -> Result<(), EncodeError> {
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

pub(super) fn drain_video(o: &mut RenditionOut) -> Result<(), EncodeError> {
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

/// What every rendition is built from.
pub(super) struct RenditionCtx<'a> {
    pub(super) job: &'a Job<'a>,
    pub(super) backend: Backend,
    pub(super) hls: bool,
    pub(super) names: &'a [(String, bool)],
    pub(super) src: &'a VideoSource,
    pub(super) graphs: &'a GraphInput,
}

/// Where one rendition's output is staged and where it is published.
pub(super) struct RenditionPaths {
    /// What FFmpeg writes: the staged MP4, or the HLS playlist in the
    /// rendition's staged directory.
    pub(super) staged: String,
    /// MP4: the file's name in the staging directory.
    pub(super) stage_name: String,
    /// MP4: the file's final name in the output's directory.
    pub(super) final_name: String,
    /// Where the output will be, for results.
    pub(super) final_path: std::path::PathBuf,
    /// HLS: the rendition's staging directory.
    pub(super) seg_dir: Option<String>,
}

/// The paths of rendition `i` (`label`), for MP4 (`names` are the output
/// files) or HLS (a directory per rendition in the staging directory).
pub(super) fn rendition_paths(
    i: usize,
    label: &str,
    hls: bool,
    names: &[(String, bool)],
    job: &Job<'_>,
    staging: &mut Staging<'_>,
) -> Result<RenditionPaths, EncodeError> {
    if hls {
        let dir = staging.subdir(label)?;
        return Ok(RenditionPaths {
            staged: format!("{dir}/index.m3u8"),
            stage_name: String::new(),
            final_name: String::new(),
            final_path: job
                .target
                .display_of(job.target.name())
                .join(label)
                .join("index.m3u8"),
            seg_dir: Some(dir),
        });
    }
    let final_name = names
        .get(i)
        .map(|(n, _)| n.clone())
        .unwrap_or_else(|| format!("{label}.mp4"));
    let stage_name = format!("{i}.mp4");
    Ok(RenditionPaths {
        staged: staging.path(&stage_name),
        stage_name,
        final_path: job.target.display_of(&final_name),
        final_name,
        seg_dir: None,
    })
}

/// One rendition's output: its staged file (or HLS directory), encoder,
/// filter graph and muxer, checked against the resolution limit.
pub(super) fn open_rendition(
    i: usize,
    r: &crate::Rendition,
    c: &RenditionCtx<'_>,
    staging: &mut Staging<'_>,
) -> Result<RenditionOut, EncodeError> {
    let (job, backend, hls, names) = (c.job, c.backend, c.hls, c.names);
    let (limits, display) = (job.limits, job.display);
    let (src_w, src_h, v_tb, frame_rate) = (c.src.src_w, c.src.src_h, c.src.tb, c.src.frame_rate);
    let decoder = &c.src.decoder;
    let over = |reason: String| EncodeError::LimitExceeded {
        path: display.to_owned(),
        reason,
    };
    let label = r.label();
    let (w, h) = r.size_for(src_w, src_h);
    if w > limits.max_width || h > limits.max_height || w < 2 || h < 2 {
        return Err(over(format!(
            "rendition {label} would be {w}x{h} from a {src_w}x{src_h} input; at most {}x{} (SPOOL_MAX_RESOLUTION)",
            limits.max_width, limits.max_height
        )));
    }
    let RenditionPaths {
        staged,
        stage_name,
        final_name,
        final_path,
        seg_dir,
    } = rendition_paths(i, &label, hls, names, job, staging)?;
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
        count: job.threads,
        ..Default::default()
    });
    crate::avlog::tag(&mut ectx);
    let mut enc = ectx.encoder().video().map_err(|e| failed(name, e))?;
    enc.set_width(w);
    enc.set_height(h);
    enc.set_format(ff::format::Pixel::YUV420P);
    // NVENC takes the frames from GPU memory when they are decoded there
    // (the CUDA device opened for NVDEC); else NVENC uploads them itself.
    let mut gpu_in = false;
    if let (Backend::Nvenc { .. }, Some(device)) = (backend, &c.graphs.device) {
        match crate::hw::encoder_frames(&mut enc, device, w, h, ff::format::Pixel::NV12) {
            Ok(()) => gpu_in = true,
            Err(why) => {
                tracing::warn!(rendition = %label, "{why}; NVENC takes frames from system memory")
            }
        }
    }
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
    // Set one by one on the context rather than passed to open as a
    // dictionary: an option the encoder does not have, or a value it
    // refuses, is an error here instead of a leftover entry that
    // ffmpeg-next's open drops unread.
    for (k, v) in rendition_options(r, backend, hls) {
        crate::ffi::set_codec_option(&mut enc, &k, &v).map_err(|why| {
            let msg = format!("{name} does not take {k}={v} ({why}); the option mapping and the linked FFmpeg disagree");
            match backend {
                Backend::Nvenc { .. } => EncodeError::NvencUnavailable(msg),
                Backend::Cpu => EncodeError::Failed(msg),
            }
        })?;
    }
    let encoder = enc
        .open_with(Dictionary::new())
        .map_err(|e| match backend {
            Backend::Nvenc { .. } => {
                EncodeError::NvencUnavailable(format!("{name} refused the session: {e}"))
            }
            // A CPU encoder refuses the same settings every time: no retry
            // can help (a size or bitrate outside what it supports).
            Backend::Cpu => EncodeError::spec(
                "renditions",
                format!("{name} refused the settings of rendition {label} ({w}x{h}): {e}"),
            ),
        })?;
    let enc_tb = encoder.time_base();
    {
        let mut ost = octx
            .add_stream(codec)
            .map_err(|e| failed("adding the video stream", e))?;
        ost.set_parameters(&encoder);
        ost.set_time_base(enc_tb);
    }
    let (graph, scale) = video_filter(
        FrameShape::of_decoder(decoder),
        None,
        c.graphs,
        w,
        h,
        gpu_in,
    )?;
    let frame_dur = if frame_rate.numerator() > 0 && enc_tb.numerator() > 0 {
        (f64::from(enc_tb.denominator()) * f64::from(frame_rate.denominator())
            / (f64::from(enc_tb.numerator()) * f64::from(frame_rate.numerator())))
        .round() as i64
    } else {
        0
    };
    Ok(RenditionOut {
        frame_dur,
        label,
        encoder_name: name,
        graph,
        scale,
        gpu_in,
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROTATIONS: [Rotation; 4] = [
        Rotation::None,
        Rotation::Clock,
        Rotation::UpsideDown,
        Rotation::CounterClock,
    ];

    fn shape(format: ff::format::Pixel) -> FrameShape {
        FrameShape {
            width: 1920,
            height: 1080,
            format,
            sar: Rational(1, 1),
        }
    }

    /// Every chain the GPU path can build (CUDA frames of 8 and 10 bits or
    /// system frames; to NVENC's GPU input or to system memory; every
    /// rotation; with and without `scale_cuda`) names filters and options
    /// the linked FFmpeg has: each filter is created and initialised with
    /// its options. A CUDA source or `hwupload` cannot be configured without
    /// a GPU, so this stops short of linking formats; the chains for system
    /// frames to system memory configure fully.
    #[test]
    fn every_filter_chain_initialises_in_the_linked_ffmpeg() {
        ff::init().expect("FFmpeg initialises");
        let mut built = 0;
        for cuda in [
            Some(ff::format::Pixel::NV12),
            Some(ff::format::Pixel::P010LE),
            None,
        ] {
            for to_gpu in [true, false] {
                for rotation in ROTATIONS {
                    for scale_cuda in [Ok(0), Err("the linked FFmpeg has no scale_cuda filter")] {
                        let (desc, stage) = chain(cuda, to_gpu, rotation, 1280, 720, scale_cuda);
                        let format = if cuda.is_some() {
                            ff::format::Pixel::CUDA
                        } else {
                            ff::format::Pixel::YUV420P
                        };
                        let mut g = parse_graph(shape(format), Rational(1, 25), None, None, &desc)
                            .unwrap_or_else(|e| panic!("{desc}: {e}"));
                        if cuda.is_none() && !to_gpu {
                            g.validate().unwrap_or_else(|e| panic!("{desc}: {e}"));
                        }
                        assert_eq!(
                            stage.on == crate::hw::Device::Gpu,
                            desc.starts_with("scale_cuda"),
                            "{desc}: {stage:?}"
                        );
                        built += 1;
                    }
                }
            }
        }
        assert_eq!(built, 3 * 2 * 4 * 2);
    }

    #[test]
    fn cuda_frames_scale_on_the_gpu_unless_rotated_or_refused() {
        let nv12 = Some(ff::format::Pixel::NV12);
        let (desc, stage) = chain(nv12, true, Rotation::None, 1280, 720, Ok(1));
        assert_eq!(desc, "scale_cuda=w=1280:h=720:format=nv12:passthrough=0");
        assert_eq!(stage, Stage::gpu("scale_cuda on GPU 1"));

        // A CPU encoder (an H100 node): scaled on the GPU, the small frame
        // copied out.
        let (desc, _) = chain(nv12, false, Rotation::None, 640, 360, Ok(0));
        assert!(desc.ends_with(",hwdownload,format=yuv420p"), "{desc}");

        let (desc, stage) = chain(nv12, true, Rotation::Clock, 720, 1280, Ok(0));
        assert_eq!(
            desc,
            "hwdownload,format=nv12,transpose=clock,scale=720:1280,format=nv12,hwupload"
        );
        assert_eq!(stage.on, crate::hw::Device::Cpu);
        assert!(
            stage.why.contains("rotated (transpose=clock)"),
            "{}",
            stage.why
        );

        let p010 = Some(ff::format::Pixel::P010LE);
        let (desc, stage) = chain(
            p010,
            false,
            Rotation::None,
            640,
            360,
            Err("scale_cuda failed (x)"),
        );
        assert!(desc.starts_with("hwdownload,format=p010le,"), "{desc}");
        assert!(
            stage
                .why
                .starts_with("scale_cuda failed (x); frames copied from the GPU"),
            "{}",
            stage.why
        );

        let (desc, stage) = chain(None, true, Rotation::None, 640, 360, Ok(0));
        assert_eq!(desc, "scale=640:360,format=nv12,hwupload");
        assert!(stage.why.contains("uploaded for NVENC"), "{}", stage.why);
    }

    /// Frames in device memory through the chains that do not need CUDA,
    /// configured and run for real: a Vulkan device on Mesa's software
    /// rasteriser (lavapipe) stands in for the GPU. System frames go up
    /// through the NVENC-input chain (`…,format=nv12,hwupload`, the device
    /// given to the graph's filters); each device frame then comes down
    /// through two rungs' CPU-scaling chains (the graph's source given the
    /// frames' context): one with `scale_cuda` refused by name, one through
    /// the runtime fallback when the `scale_cuda` graph cannot configure
    /// (Vulkan frames are not CUDA frames). Every frame comes out at the
    /// rung's size with the picture it went in with.
    ///
    /// Each frame comes down before the next goes up, as decoded frames do
    /// in the pipeline. With ten frames uploaded before any came down, FFmpeg
    /// 5.1's Vulkan upload on lavapipe left a frame holding the next one's
    /// picture in 3 of 6 runs (its staging copy not yet done); interleaved,
    /// 0 of 90 runs (60 of them four at once). A CUDA decoder's frames do
    /// not go through that upload.
    #[test]
    fn device_frames_go_up_and_come_down_through_the_fallback_chains() {
        ff::init().expect("FFmpeg initialises");
        let Some(device) = crate::hw::HwDevice::vulkan_or_skip() else {
            return;
        };
        let mut gi = GraphInput {
            shape: shape(ff::format::Pixel::YUV420P),
            tb: Rational(1, 25),
            rotation: Rotation::None,
            device: Some(device),
            scale_cuda: Err("the linked FFmpeg has no scale_cuda filter".into()),
        };
        // Up: 1920x1080 system frames to 1280x720 device frames.
        let src = shape(ff::format::Pixel::YUV420P);
        let (mut up, stage) = video_filter(src, None, &gi, 1280, 720, true).expect("upload graph");
        assert_eq!(stage.on, crate::hw::Device::Cpu);
        let mut downs: Vec<(filter::Graph, u8)> = Vec::new();
        let pull = |g: &mut filter::Graph, name: &str| {
            let mut out = frame::Video::empty();
            let mut sink = g.get(name).expect("sink");
            sink.sink().frame(&mut out).ok().map(|()| out)
        };
        for i in 0..10u8 {
            let mut f = frame::Video::new(ff::format::Pixel::YUV420P, 1920, 1080);
            for plane in 0..3 {
                f.data_mut(plane)
                    .fill(if plane == 0 { 40 + 10 * i } else { 128 });
            }
            f.set_pts(Some(i64::from(i)));
            up.get("in")
                .expect("in")
                .source()
                .add(&f)
                .expect("frame in");
            let on_device = pull(&mut up, "out").expect("an uploaded frame per frame");
            assert_eq!((on_device.width(), on_device.height()), (1280, 720));
            assert_eq!(
                crate::hw::sw_format(&on_device),
                Some(ff::format::Pixel::NV12)
            );
            if downs.is_empty() {
                // Down: one graph with scale_cuda refused by name, one with
                // scale_cuda allowed, whose graph fails and falls back.
                let dshape = FrameShape::of_frame(&on_device);
                for (scale_cuda, why) in [
                    (
                        Err("the linked FFmpeg has no scale_cuda filter".to_owned()),
                        "no scale_cuda filter",
                    ),
                    (Ok(0), "scale_cuda failed ("),
                ] {
                    gi.scale_cuda = scale_cuda;
                    let (down, stage) =
                        video_filter(dshape, Some(&on_device), &gi, 640, 360, false)
                            .expect("download graph");
                    assert_eq!(stage.on, crate::hw::Device::Cpu, "{stage:?}");
                    assert!(stage.why.contains(why), "{stage:?}");
                    downs.push((down, 0));
                }
            }
            for (down, got) in &mut downs {
                // The source takes the frame's buffers: each graph gets its
                // own reference, as in `feed_all`.
                let f = crate::hw::share(&on_device).expect("a reference");
                down.get("in")
                    .expect("in")
                    .source()
                    .add(&f)
                    .expect("frame in");
                while let Some(out) = pull(down, "out") {
                    assert_eq!(out.format(), ff::format::Pixel::YUV420P);
                    assert_eq!((out.width(), out.height()), (640, 360));
                    let luma = out.data(0)[out.stride(0) * 180 + 320];
                    let want = 40 + 10 * *got;
                    assert!(
                        luma.abs_diff(want) <= 2,
                        "frame {got}: luma {luma}, sent {want}"
                    );
                    *got += 1;
                }
            }
        }
        for (_, got) in &downs {
            assert_eq!(*got, 10);
        }
    }
}
