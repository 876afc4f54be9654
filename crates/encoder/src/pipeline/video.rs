//! The video ladder: one decoded frame through each rendition's filter graph
//! (rebuilt when the stream changes shape) and encoder into its muxer.

use super::*;

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

pub(super) fn video_filter(
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
}

/// One rendition's output: its staged file (or HLS directory), encoder,
/// filter graph and muxer, checked against the resolution limit.
pub(super) fn open_rendition(
    i: usize,
    r: &crate::spec::Rendition,
    c: &RenditionCtx<'_>,
    staging: &mut Staging<'_>,
) -> Result<RenditionOut, EncodeError> {
    let (job, backend, hls, names) = (c.job, c.backend, c.hls, c.names);
    let (limits, display) = (job.limits, job.display);
    let (src_w, src_h, v_tb, frame_rate, rotation) = (
        c.src.src_w,
        c.src.src_h,
        c.src.tb,
        c.src.frame_rate,
        c.src.rotation,
    );
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
    crate::avlog::tag(&mut ectx);
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
    let graph = video_filter(FrameShape::of_decoder(decoder), v_tb, rotation, w, h)?;
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
