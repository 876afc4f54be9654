//! The audio side: AAC encoded once and muxed into every rendition, or the
//! input's stream copied.

use super::{AudioOut, EncodeError, Muxed, failed};
use ff::{Packet, Rational, codec, encoder, filter, format, frame};
use ffmpeg_next as ff;
/// The sample rates FFmpeg's AAC encoder takes.
const AAC_RATES: [u32; 12] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000,
];

/// The rate AAC is encoded at for an input at `rate`: the same when AAC
/// takes it, else 48 kHz above that, else the nearest AAC rate (the filter
/// graph resamples). 192 kHz and 384 kHz studio audio, or a stray 44,056 Hz,
/// would otherwise fail every attempt with "sample rate not supported".
pub(super) fn aac_rate(rate: u32) -> u32 {
    if AAC_RATES.contains(&rate) {
        rate
    } else if rate > 48000 {
        48000
    } else {
        AAC_RATES
            .iter()
            .copied()
            .min_by_key(|r| r.abs_diff(rate))
            .unwrap_or(48000)
    }
}

pub(super) fn aac_setup<O: Muxed>(
    outs: &mut [O],
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
            o.octx_ref()
                .format()
                .flags()
                .contains(format::Flags::GLOBAL_HEADER)
        })
        .unwrap_or(false);
    if global {
        enc.set_flags(codec::Flags::GLOBAL_HEADER);
    }
    let rate = aac_rate(decoder.rate());
    enc.set_rate(rate as i32);
    enc.set_channel_layout(layout);
    enc.set_channels(layout.channels());
    enc.set_format(ff::format::Sample::F32(ff::format::sample::Type::Planar));
    enc.set_bit_rate(kbps as usize * 1000);
    enc.set_time_base((1, rate as i32));
    // The same audio is refused the same way every time: permanent.
    let encoder = enc.open_as(codec).map_err(|e| {
        EncodeError::spec(
            "audio",
            format!(
                "the AAC encoder refused the input's audio ({} Hz, {} channels): {e}; use \"audio\": {{\"mode\": \"none\"}} or \"copy\"",
                decoder.rate(),
                layout.channels()
            ),
        )
    })?;
    for o in outs.iter_mut() {
        let mut ost = o
            .octx()
            .add_stream(codec)
            .map_err(|e| failed("adding the audio stream", e))?;
        ost.set_parameters(&encoder);
        ost.set_time_base((1, rate as i32));
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
        next_ts: None,
    })
}

/// The input's audio stream `ist` copied into every output.
pub(super) fn copy_setup<O: Muxed>(
    outs: &mut [O],
    ist: usize,
    ist_tb: Rational,
    par: codec::Parameters,
) -> Result<AudioOut, EncodeError> {
    for o in outs.iter_mut() {
        let mut ost = o
            .octx()
            .add_stream(encoder::find(codec::Id::None))
            .map_err(|e| failed("adding the audio stream", e))?;
        ost.set_parameters(par.clone());
        clear_codec_tag(&mut ost);
    }
    Ok(AudioOut::Copy {
        ist,
        ist_tb,
        last_dts: None,
    })
}

impl AudioOut {
    /// The input stream that goes to the outputs, if any.
    pub(super) fn input(&self) -> Option<usize> {
        match self {
            AudioOut::None => None,
            AudioOut::Copy { ist, .. } | AudioOut::Aac { ist, .. } => Some(*ist),
        }
    }
}

pub(super) fn audio_packet<O: Muxed>(
    audio: &mut AudioOut,
    outs: &mut [O],
    si: usize,
    packet: &Packet,
) -> Result<(), EncodeError> {
    match audio {
        AudioOut::None => Ok(()),
        AudioOut::Copy {
            ist,
            ist_tb,
            last_dts,
        } if *ist == si => {
            // Timestamps that do not move forward: the packet is dropped
            // (a few milliseconds of audio) rather than the job failed.
            if let Some(d) = packet.dts().or(packet.pts()) {
                if last_dts.is_some_and(|l| d <= l) {
                    return Ok(());
                }
                *last_dts = Some(d);
            }
            for o in outs.iter_mut() {
                let Some(tb) = o.audio_tb() else { continue };
                let mut p = packet.clone();
                p.set_stream(o.audio_index());
                p.set_position(-1);
                p.rescale_ts(*ist_tb, tb);
                p.write_interleaved(o.octx())
                    .map_err(|e| failed(format!("writing rendition {}", o.label()), e))?;
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
            next_ts,
        } if *ist == si => {
            let mut p = packet.clone();
            p.rescale_ts(*ist_tb, decoder.time_base());
            if decoder.send_packet(&p).is_err() {
                // A damaged audio packet loses a few milliseconds, not the job.
                return Ok(());
            }
            aac_pump(decoder, next_ts, graph, encoder, *enc_tb, outs, false)
        }
        _ => Ok(()),
    }
}

pub(super) fn audio_flush<O: Muxed>(
    audio: &mut AudioOut,
    outs: &mut [O],
) -> Result<(), EncodeError> {
    if let AudioOut::Aac {
        decoder,
        graph,
        encoder,
        enc_tb,
        next_ts,
        ..
    } = audio
    {
        let _ = decoder.send_eof();
        aac_pump(decoder, next_ts, graph, encoder, *enc_tb, outs, true)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) fn aac_pump<O: Muxed>(
    decoder: &mut codec::decoder::Audio,
    next_ts: &mut Option<i64>,
    graph: &mut filter::Graph,
    encoder: &mut encoder::Audio,
    enc_tb: Rational,
    outs: &mut [O],
    eof: bool,
) -> Result<(), EncodeError> {
    let mut decoded = frame::Audio::empty();
    while decoder.receive_frame(&mut decoded).is_ok() {
        // Timestamps that do not move forward follow the previous frame.
        let tb = decoder.time_base();
        let ts = match (decoded.timestamp(), *next_ts) {
            (Some(t), Some(n)) if t < n => Some(n),
            (t, _) => t,
        };
        if let Some(t) = ts
            && tb.numerator() > 0
            && decoder.rate() > 0
        {
            let step = decoded.samples() as i64 * i64::from(tb.denominator())
                / (i64::from(decoder.rate()) * i64::from(tb.numerator()));
            *next_ts = Some(t.saturating_add(step));
        }
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

pub(super) fn aac_write<O: Muxed>(
    encoder: &mut encoder::Audio,
    enc_tb: Rational,
    outs: &mut [O],
) -> Result<(), EncodeError> {
    let mut p = Packet::empty();
    while encoder.receive_packet(&mut p).is_ok() {
        for o in outs.iter_mut() {
            let Some(tb) = o.audio_tb() else { continue };
            let mut q = p.clone();
            q.set_stream(o.audio_index());
            q.rescale_ts(enc_tb, tb);
            q.write_interleaved(o.octx())
                .map_err(|e| failed(format!("writing rendition {}", o.label()), e))?;
        }
    }
    Ok(())
}

/// A copied stream keeps its input codec tag, which another container may
/// reject; FFmpeg's own CLI clears it. ffmpeg-next has no setter for it.
#[allow(unsafe_code)]
pub(super) fn clear_codec_tag(ost: &mut format::stream::StreamMut) {
    // SAFETY: `parameters()` points at the stream's live AVCodecParameters,
    // owned by the output context that `ost` borrows mutably; writing a plain
    // integer field cannot invalidate anything.
    unsafe {
        (*ost.parameters().as_mut_ptr()).codec_tag = 0;
    }
}
