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
