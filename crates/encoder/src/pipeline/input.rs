//! Opening an input: the protocol and demuxer whitelists, the probe limit,
//! the interrupt callback tied to cancellation, and the limits its header shows.

use super::*;

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

/// `avformat_open_input` with options and an interrupt callback tied to
/// `cancel` (ffmpeg-next offers one or the other, and leaks the callback).
#[allow(unsafe_code)]
pub(super) fn open_interruptible(
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
