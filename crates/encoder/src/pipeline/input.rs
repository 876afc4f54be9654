//! Opening an input: the protocol and demuxer whitelists, the probe limit,
//! the interrupt callback tied to cancellation, and the limits its header shows.

use super::{
    CancellationToken, Container, EncodeError, EncodeSpec, InputFile, Limits, OpenedInput,
    Rotation, failed,
};
use ff::{Dictionary, Rational, codec, format, media};
use ffmpeg_next as ff;
/// Demuxers an input may use. Playlists and concat lists are left out: they
/// open other files and URLs, which would escape the input root.
pub(super) const INPUT_FORMATS: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,mpeg,mxf,wav,mp3,aac,ogg,ivf,h264,hevc,yuv4mpegpipe";
/// FFmpeg's interrupt callback: non-zero makes a blocked read return
/// `AVERROR_EXIT`.
extern "C" fn interrupted(opaque: *mut std::ffi::c_void) -> std::ffi::c_int {
    // SAFETY: `opaque` is the `Box<CancellationToken>` owned by the
    // `OpenedInput` whose context calls this; the box outlives the context.
    #[allow(unsafe_code)]
    let token = unsafe { &*(opaque as *const CancellationToken) };
    std::ffi::c_int::from(token.is_cancelled())
}

/// Decoders FFmpeg may open while probing an input, and the only codecs an
/// input's streams may have: what media services upload (camera, phone,
/// screen and editing formats). Image codecs (PNG, TIFF, EXR, ...) are left
/// out: their headers declare any frame size and their decoders allocate it
/// whole before anything checks it.
pub(super) const DECODERS: &str = "h264,hevc,av1,libdav1d,vp8,vp9,libvpx,libvpx-vp9,mpeg1video,mpeg2video,mpeg4,msmpeg4v2,msmpeg4v3,h263,mjpeg,prores,dnxhd,vc1,wmv3,theora,rawvideo,ffv1,aac,aac_fixed,mp3,mp3float,mp2,mp2float,ac3,ac3_fixed,eac3,opus,libopus,vorbis,flac,alac,pcm_s16le,pcm_s16be,pcm_s24le,pcm_s24be,pcm_s32le,pcm_s32be,pcm_f32le,pcm_f32be,pcm_f64le,pcm_u8,pcm_s8,pcm_mulaw,pcm_alaw,adpcm_ima_qt,adpcm_ms";

/// Why an input could not be opened.
pub(super) enum OpenError {
    /// FFmpeg's error.
    Ff(ff::Error),
    /// Over a limit the header shows, found before any decoder opened.
    Limit(String),
    /// A stream of a codec spool does not decode.
    Codec(String),
}

/// What an input's header may declare before any decoder is opened for it.
pub(super) struct HeaderLimits {
    pub(super) max_width: u32,
    pub(super) max_height: u32,
    pub(super) max_streams: usize,
}

/// Checks the streams the container declared, before `find_stream_info`
/// opens a decoder for any of them: the frame size a header declares is
/// what a probing decoder allocates.
#[allow(unsafe_code)]
fn check_declared(ps: *mut ff::ffi::AVFormatContext, lim: &HeaderLimits) -> Result<(), OpenError> {
    use ff::ffi;
    let allowed: Vec<&str> = DECODERS.split(',').collect();
    // SAFETY: `ps` is an open format context; its `streams` array holds
    // `nb_streams` valid stream pointers, each with codec parameters.
    unsafe {
        let n = (*ps).nb_streams as usize;
        if n > lim.max_streams {
            return Err(OpenError::Limit(format!(
                "{n} streams; at most {} (SPOOL_MAX_STREAMS)",
                lim.max_streams
            )));
        }
        for i in 0..n {
            let st = *(*ps).streams.add(i);
            let par = (*st).codecpar;
            if par.is_null() {
                continue;
            }
            let kind = (*par).codec_type;
            if kind != ffi::AVMediaType::AVMEDIA_TYPE_VIDEO
                && kind != ffi::AVMediaType::AVMEDIA_TYPE_AUDIO
            {
                continue;
            }
            let (w, h) = ((*par).width, (*par).height);
            if w < 0 || h < 0 || w as u32 > lim.max_width || h as u32 > lim.max_height {
                return Err(OpenError::Limit(format!(
                    "stream {i} declares {w}x{h} frames; at most {}x{} (SPOOL_MAX_RESOLUTION)",
                    lim.max_width, lim.max_height
                )));
            }
            let id = (*par).codec_id;
            if id == ffi::AVCodecID::AV_CODEC_ID_NONE {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(ffi::avcodec_get_name(id))
                .to_string_lossy()
                .into_owned();
            // A codec is allowed when some allowed decoder decodes it.
            let ok = allowed.iter().any(|d| {
                std::ffi::CString::new(*d).is_ok_and(|c| {
                    let dec = ffi::avcodec_find_decoder_by_name(c.as_ptr());
                    !dec.is_null() && (*dec).id == id
                })
            });
            if !ok && kind == ffi::AVMediaType::AVMEDIA_TYPE_VIDEO {
                return Err(OpenError::Codec(format!(
                    "stream {i} is {name}, which spool does not decode (video: H.264, HEVC, AV1, VP8/9, MPEG-1/2/4, ProRes, DNxHD, MJPEG, VC-1, Theora, raw)"
                )));
            }
        }
    }
    Ok(())
}

/// `avformat_open_input` with options and an interrupt callback tied to
/// `cancel` (ffmpeg-next offers one or the other, and leaks the callback);
/// then the declared streams checked against `lim`, and the probe run with
/// only [`DECODERS`] and `max_pixels` on every decoder it opens, so probing
/// cannot allocate more than a frame at the resolution limit.
#[allow(unsafe_code)]
pub(super) fn open_interruptible(
    path: &str,
    opts: Dictionary,
    lim: &HeaderLimits,
    cancel: &CancellationToken,
) -> Result<OpenedInput, OpenError> {
    use ff::ffi;
    let token = Box::new(cancel.clone());
    let c_path = std::ffi::CString::new(path).map_err(|_| OpenError::Ff(ff::Error::InvalidData))?;
    // SAFETY: the pointers passed are valid for the calls; on failure
    // avformat_open_input frees the context itself, and on success the
    // context is owned by the returned `Input`, which closes it on drop
    // (and is closed here on every early return).
    unsafe {
        let mut ps = ffi::avformat_alloc_context();
        if ps.is_null() {
            return Err(OpenError::Ff(ff::Error::Other {
                errno: ff::util::error::ENOMEM,
            }));
        }
        (*ps).interrupt_callback = ffi::AVIOInterruptCB {
            callback: Some(interrupted),
            opaque: &*token as *const CancellationToken as *mut std::ffi::c_void,
        };
        let mut dict = opts.disown();
        let res = ffi::avformat_open_input(&mut ps, c_path.as_ptr(), std::ptr::null(), &mut dict);
        drop(Dictionary::own(dict));
        if res < 0 {
            return Err(OpenError::Ff(ff::Error::from(res)));
        }
        if let Err(e) = check_declared(ps, lim) {
            ffi::avformat_close_input(&mut ps);
            return Err(e);
        }
        // One options dictionary per stream for the probing decoders.
        let n = (*ps).nb_streams as usize;
        let pixels = (u64::from(lim.max_width) * u64::from(lim.max_height)).to_string();
        let mut per_stream: Vec<*mut ffi::AVDictionary> = vec![std::ptr::null_mut(); n];
        let (k, v) = (
            std::ffi::CString::new("max_pixels").unwrap_or_default(),
            std::ffi::CString::new(pixels).unwrap_or_default(),
        );
        for d in &mut per_stream {
            ffi::av_dict_set(d, k.as_ptr(), v.as_ptr(), 0);
        }
        let r = ffi::avformat_find_stream_info(ps, per_stream.as_mut_ptr());
        for d in &mut per_stream {
            ffi::av_dict_free(d);
        }
        if r < 0 {
            ffi::avformat_close_input(&mut ps);
            return Err(OpenError::Ff(ff::Error::from(r)));
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
    open_checked(input, display, limits, cancel, true)
}

/// [`open_input`] for a file that may hold audio alone (a chunked encode's
/// audio part).
pub(super) fn open_audio_input(
    input: &InputFile,
    display: &str,
    limits: &Limits,
    cancel: &CancellationToken,
) -> Result<OpenedInput, EncodeError> {
    open_checked(input, display, limits, cancel, false)
}

fn open_checked(
    input: &InputFile,
    display: &str,
    limits: &Limits,
    cancel: &CancellationToken,
    video_required: bool,
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
    opts.set("codec_whitelist", DECODERS);
    let lim = HeaderLimits {
        max_width: limits.max_width,
        max_height: limits.max_height,
        max_streams: limits.max_streams,
    };
    let opened =
        open_interruptible(&input.ffmpeg_path(), opts, &lim, cancel).map_err(|e| match e {
            _ if cancel.is_cancelled() => EncodeError::Cancelled,
            OpenError::Limit(reason) => EncodeError::LimitExceeded {
                path: display.to_owned(),
                reason,
            },
            OpenError::Codec(reason) => bad(reason),
            OpenError::Ff(e) => bad(format!(
                "{e} (not a supported media file, or it is corrupt or truncated)"
            )),
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
    if !video_required && ictx.streams().best(media::Type::Video).is_none() {
        return Ok(opened);
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

/// The input's video: its stream, timing, declared length, rotation and an
/// opened decoder (with `max_pixels`), checked against the header limits.
pub(super) struct VideoSource {
    /// The video stream's index.
    pub(super) index: usize,
    /// Its time base.
    pub(super) tb: Rational,
    /// Frames its header declares, when it declares any.
    pub(super) declared_frames: Option<u64>,
    /// The nominal frame rate.
    pub(super) frame_rate: Rational,
    /// The container's declared duration, seconds (0: unknown).
    pub(super) duration_s: f64,
    /// The video stream's own declared duration, seconds (0: unknown).
    pub(super) video_duration_s: f64,
    /// How to turn the frames upright.
    pub(super) rotation: Rotation,
    /// The opened decoder.
    pub(super) decoder: codec::decoder::Video,
    /// Where it decodes (GPU until the first frame says otherwise).
    pub(super) decode: crate::hw::Stage,
    /// The CUDA device NVDEC decodes on, when it does.
    pub(super) device: Option<crate::hw::HwDevice>,
    /// The displayed size (after rotation).
    pub(super) src_w: u32,
    pub(super) src_h: u32,
}

pub(super) fn probe_video(
    ictx: &format::context::Input,
    display: &str,
    limits: &Limits,
    spec: &EncodeSpec,
    decode_gpu: Result<u32, String>,
    threads: usize,
) -> Result<VideoSource, EncodeError> {
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
        count: threads,
        ..Default::default()
    });
    crate::avlog::tag(&mut vctx);
    let rotation = Rotation::of(&vst);
    let vcodec = ff::decoder::find(vctx.id()).ok_or_else(|| EncodeError::BadInput {
        path: display.into(),
        reason: "no decoder for its video".into(),
    })?;
    let mut cuda = None;
    let decode = match decode_gpu {
        Err(why) => crate::hw::Stage::cpu(why),
        Ok(_) if !crate::hw::nvdec_decodes(&vcodec) => crate::hw::Stage::cpu(format!(
            "this FFmpeg has no NVDEC decoder for {}",
            vcodec.name()
        )),
        Ok(gpu) => match crate::hw::HwDevice::cuda(gpu) {
            Err(why) => crate::hw::Stage::cpu(why),
            Ok(device) => {
                crate::hw::attach(&mut vctx, &device);
                // NVDEC decodes; CPU threads would only copy frames around.
                vctx.set_threading(codec::threading::Config {
                    kind: codec::threading::Type::None,
                    count: 1,
                    ..Default::default()
                });
                cuda = Some(device);
                crate::hw::Stage::gpu(format!("NVDEC on GPU {gpu}"))
            }
        },
    };
    // The decoder refuses to allocate frames over the resolution limit, so a
    // stream that grows mid-way cannot take the worker's memory with it.
    let mut dopts = Dictionary::new();
    dopts.set(
        "max_pixels",
        &(u64::from(limits.max_width) * u64::from(limits.max_height)).to_string(),
    );
    let decoder = vctx
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
    Ok(VideoSource {
        index: v_index,
        tb: v_tb,
        declared_frames,
        frame_rate,
        duration_s,
        video_duration_s,
        rotation,
        decoder,
        decode,
        device: cuda,
        src_w,
        src_h,
    })
}
