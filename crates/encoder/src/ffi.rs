//! FFmpeg calls that ffmpeg-next has no safe wrapper for, for encoder
//! options. Each `unsafe` block states why it is sound.

// The one module of new FFI the option checks need (see Cargo.toml's lint
// note for the older spots in the pipeline).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_void};

use ffmpeg_next as ff;

/// Sets `key=value` on an allocated (opened or not) codec context, searching
/// its private options too (`AV_OPT_SEARCH_CHILDREN`), exactly as
/// `avcodec_open2` applies an options dictionary. Errors name what FFmpeg
/// said: an option this encoder does not have, or a value it refuses.
pub(crate) fn set_codec_option(
    ctx: &mut ff::codec::Context,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let (k, v) = match (CString::new(key), CString::new(value)) {
        (Ok(k), Ok(v)) => (k, v),
        _ => return Err("contains a NUL byte".into()),
    };
    // SAFETY: `ctx` owns a live AVCodecContext allocated by
    // avcodec_alloc_context3 (ffmpeg-next frees it only on drop, and the
    // `&mut` borrow keeps it alive and unshared for the call); its first
    // field is the AVClass pointer av_opt_set requires, and with
    // AV_OPT_SEARCH_CHILDREN FFmpeg also searches `priv_data`, which the
    // allocation set up for the codec. `k` and `v` are NUL-terminated and
    // outlive the call, which copies what it keeps.
    let ret = unsafe {
        ff::ffi::av_opt_set(
            ctx.as_mut_ptr().cast::<c_void>(),
            k.as_ptr(),
            v.as_ptr(),
            ff::ffi::AV_OPT_SEARCH_CHILDREN,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    if ret == ff::ffi::AVERROR_OPTION_NOT_FOUND {
        return Err("the encoder has no such option".into());
    }
    Err(format!("the value is refused ({})", error_text(ret)))
}

/// FFmpeg's text for an error code.
fn error_text(code: i32) -> String {
    let mut buf = [0 as c_char; 128];
    // SAFETY: `buf` is a writable buffer of the length passed, which
    // av_strerror NUL-terminates within; it lives across the call and the
    // CStr read after it.
    let ok = unsafe { ff::ffi::av_strerror(code, buf.as_mut_ptr(), buf.len()) } == 0;
    if !ok {
        return format!("error {code}");
    }
    // SAFETY: av_strerror returned 0, so `buf` holds a NUL-terminated string.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}
