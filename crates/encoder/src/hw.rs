//! The GPU decode stage: NVDEC through a CUDA hardware device context, the
//! FFmpeg calls ffmpeg-next has no wrapper for. Each `unsafe` block says why
//! it is sound.
//!
//! Decoded CUDA frames are copied to system memory for the filters (scaling
//! stays on the CPU; `scale_cuda` is not wired yet), so what this stage saves
//! is the decode's CPU time, which dominates on a high-resolution H.264 or
//! HEVC input. Every step falls back on its own: no CUDA device, no NVDEC
//! decoder for the codec, or a stream NVDEC refuses (FFmpeg then offers no
//! CUDA format and decodes on the CPU) each leave the decode on the CPU, and
//! the job's result says which and why ([`Stage`]).

// FFI: hardware device contexts, the decoder's `get_format`, frame transfer.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::ptr;

use ff::ffi;
use ffmpeg_next as ff;

/// Where one stage of an encode ran, and why there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stage {
    /// `gpu` or `cpu`.
    pub on: &'static str,
    /// Why: what was found, or what was missing.
    pub why: String,
}

impl Stage {
    /// On the CPU, because `why`.
    pub fn cpu(why: impl Into<String>) -> Self {
        Stage {
            on: "cpu",
            why: why.into(),
        }
    }

    /// On the GPU, because `why`.
    pub fn gpu(why: impl Into<String>) -> Self {
        Stage {
            on: "gpu",
            why: why.into(),
        }
    }
}

/// Where each stage of an encode ran.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stages {
    /// Decoding the input's video.
    pub decode: Stage,
    /// Scaling to each rendition.
    pub scale: Stage,
    /// Encoding.
    pub encode: Stage,
}

/// A CUDA hardware device context (one GPU), released on drop. The decoder
/// holds its own reference, so this may drop before the decoder does.
pub(crate) struct CudaDevice {
    buf: *mut ffi::AVBufferRef,
}

impl CudaDevice {
    /// Opens GPU `gpu` through FFmpeg's CUDA hwcontext (which loads
    /// libcuda); the error says why not, in FFmpeg's words.
    pub(crate) fn open(gpu: u32) -> Result<Self, String> {
        let name = CString::new(gpu.to_string()).map_err(|e| e.to_string())?;
        let mut buf: *mut ffi::AVBufferRef = ptr::null_mut();
        // FFmpeg says why in its log (`Cannot load libcuda.so.1`), not in
        // the error code: keep those lines for the reason.
        let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let into = said.clone();
        let scope = crate::avlog::scope(std::sync::Arc::new(move |_, m: &str| {
            into.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(m.to_owned());
        }));
        // SAFETY: `buf` is a valid out-pointer; `name` is NUL-terminated and
        // outlives the call; a null options dictionary is allowed. On
        // failure FFmpeg leaves `buf` null, on success it owns one reference
        // that Drop releases.
        let ret = unsafe {
            ffi::av_hwdevice_ctx_create(
                &mut buf,
                ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_CUDA,
                name.as_ptr(),
                ptr::null_mut(),
                0,
            )
        };
        drop(scope);
        if ret < 0 || buf.is_null() {
            let said = said.lock().unwrap_or_else(|p| p.into_inner()).join("; ");
            let detail = if said.is_empty() {
                String::new()
            } else {
                format!(" ({said})")
            };
            return Err(format!(
                "no CUDA device {gpu}: {}{detail}",
                ff::Error::from(ret)
            ));
        }
        Ok(CudaDevice { buf })
    }
}

/// Whether a CUDA device context opens on GPU `gpu` (for reports): `Err`
/// says why not, in FFmpeg's words.
pub fn check_cuda_device(gpu: u32) -> Result<(), String> {
    CudaDevice::open(gpu).map(drop)
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        // SAFETY: `buf` holds the one reference `open` got; unref nulls it.
        unsafe { ffi::av_buffer_unref(&mut self.buf) }
    }
}

/// Whether the linked FFmpeg decodes `codec` on NVDEC (a CUDA hardware
/// configuration through a device context).
pub(crate) fn nvdec_decodes(codec: &ff::Codec) -> bool {
    (0..)
        .map_while(|i| {
            // SAFETY: `codec` wraps a static AVCodec FFmpeg registered; the
            // index walk stops at the first null, as the API requires, and the
            // returned configurations are static.
            let cfg = unsafe { ffi::avcodec_get_hw_config(codec.as_ptr(), i) };
            // SAFETY: non-null configurations point to static data.
            (!cfg.is_null()).then(|| unsafe { *cfg })
        })
        .any(|c| {
            c.device_type == ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_CUDA
                && c.pix_fmt == ffi::AVPixelFormat::AV_PIX_FMT_CUDA
                && c.methods & ffi::AV_CODEC_HW_CONFIG_METHOD_HW_DEVICE_CTX as i32 != 0
        })
}

/// The input codecs the linked FFmpeg decodes on NVDEC (`h264`, `hevc`,
/// …), for reports and tests.
pub fn nvdec_codecs() -> Vec<String> {
    let mut names: Vec<String> = [
        ff::codec::Id::H264,
        ff::codec::Id::HEVC,
        ff::codec::Id::AV1,
        ff::codec::Id::VP8,
        ff::codec::Id::VP9,
        ff::codec::Id::MPEG1VIDEO,
        ff::codec::Id::MPEG2VIDEO,
        ff::codec::Id::MPEG4,
        ff::codec::Id::VC1,
        ff::codec::Id::MJPEG,
        ff::codec::Id::PRORES,
    ]
    .into_iter()
    .filter_map(ff::decoder::find)
    .filter(nvdec_decodes)
    .map(|c| c.name().to_owned())
    .collect();
    names.dedup();
    names
}

/// Makes a decoder context (before it opens) decode on `device`: frames
/// come out as CUDA frames when NVDEC takes the stream, as software frames
/// when it does not.
pub(crate) fn attach(ctx: &mut ff::codec::Context, device: &CudaDevice) {
    // SAFETY: `ctx` owns a live, not yet opened AVCodecContext (the `&mut`
    // borrow keeps it unshared); it takes its own reference to the device
    // (freed with the context), and `get_cuda` is a plain function valid
    // for the life of the process.
    unsafe {
        let c = ctx.as_mut_ptr();
        (*c).hw_device_ctx = ffi::av_buffer_ref(device.buf);
        (*c).get_format = Some(get_cuda);
    }
}

/// The decoder's format choice: CUDA when offered, else FFmpeg's default
/// (a software format: the CPU decodes).
unsafe extern "C" fn get_cuda(
    ctx: *mut ffi::AVCodecContext,
    fmts: *const ffi::AVPixelFormat,
) -> ffi::AVPixelFormat {
    let mut p = fmts;
    // SAFETY: FFmpeg passes a list terminated by AV_PIX_FMT_NONE.
    unsafe {
        while *p != ffi::AVPixelFormat::AV_PIX_FMT_NONE {
            if *p == ffi::AVPixelFormat::AV_PIX_FMT_CUDA {
                return *p;
            }
            p = p.add(1);
        }
        ffi::avcodec_default_get_format(ctx, fmts)
    }
}

/// Whether `f` lives in GPU memory.
pub(crate) fn is_cuda(f: &ff::frame::Video) -> bool {
    f.format() == ff::format::Pixel::CUDA
}

/// Copies a CUDA frame into `dst` in system memory (NV12, or P010 for
/// 10-bit), with its timestamps and properties.
pub(crate) fn download(
    src: &ff::frame::Video,
    dst: &mut ff::frame::Video,
) -> Result<(), ff::Error> {
    // SAFETY: both wrap live AVFrames owned by their `Video` values; `dst`
    // is unreferenced first so the transfer allocates fresh buffers, and
    // `src` is only read.
    let ret = unsafe {
        let d = dst.as_mut_ptr();
        ffi::av_frame_unref(d);
        let r = ffi::av_hwframe_transfer_data(d, src.as_ptr(), 0);
        if r >= 0 {
            ffi::av_frame_copy_props(d, src.as_ptr())
        } else {
            r
        }
    };
    if ret < 0 {
        return Err(ff::Error::from(ret));
    }
    Ok(())
}
