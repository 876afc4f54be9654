//! The GPU side of an encode: NVDEC, `scale_cuda` and NVENC from GPU memory
//! through CUDA hardware device and frames contexts, the FFmpeg calls
//! ffmpeg-next has no wrapper for. Each `unsafe` block says why it is sound.
//!
//! The GPU-resident pipeline: NVDEC decodes into CUDA frames, each
//! rendition's filter graph scales them with `scale_cuda` (or copies them
//! out and scales on the CPU), and NVENC encodes from GPU memory (or a CPU
//! encoder takes the scaled frames copied out). Every step falls back on
//! its own: no CUDA device, no NVDEC decoder for the codec, or a stream
//! NVDEC refuses (FFmpeg then offers no CUDA format and decodes on the
//! CPU) each leave the decode on the CPU; a rotated input, or a
//! `scale_cuda` graph that does not configure, scales on the CPU. The
//! job's result says where each stage ran and why ([`Stage`]).

// FFI: hardware device and frames contexts, the decoder's `get_format`, the
// filter graph's hardware source and device.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::ptr;

use ff::ffi;
use ffmpeg_next as ff;

/// Which processor a stage ran on (`"cpu"` or `"gpu"` in a result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// The CPU.
    Cpu,
    /// The GPU (NVDEC, `scale_cuda`, NVENC).
    Gpu,
}

/// Where one stage of an encode ran, and why there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stage {
    /// Where it ran.
    pub on: Device,
    /// Why: what was found, or what was missing.
    pub why: String,
}

impl Stage {
    /// On the CPU, because `why`.
    pub fn cpu(why: impl Into<String>) -> Self {
        Stage {
            on: Device::Cpu,
            why: why.into(),
        }
    }

    /// On the GPU, because `why`.
    pub fn gpu(why: impl Into<String>) -> Self {
        Stage {
            on: Device::Gpu,
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

/// A hardware device context (one GPU), released on drop: CUDA in the
/// pipeline; the tests also open a Vulkan one on Mesa's software
/// rasteriser, which stands in for a GPU where there is none. The decoder,
/// filters and encoder each hold their own reference, so this may drop
/// before they do.
pub(crate) struct HwDevice {
    buf: *mut ffi::AVBufferRef,
    /// The pixel format of frames in its memory (`CUDA`, `VULKAN`).
    format: ffi::AVPixelFormat,
}

impl HwDevice {
    /// Opens GPU `gpu` through FFmpeg's CUDA hwcontext (which loads
    /// libcuda); the error says why not, in FFmpeg's words.
    pub(crate) fn cuda(gpu: u32) -> Result<Self, String> {
        Self::open(
            ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_CUDA,
            ffi::AVPixelFormat::AV_PIX_FMT_CUDA,
            &gpu.to_string(),
            &format!("no CUDA device {gpu}"),
        )
    }

    /// Opens the first Vulkan device (in tests: Mesa's lavapipe).
    #[cfg(test)]
    pub(crate) fn vulkan() -> Result<Self, String> {
        Self::open(
            ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_VULKAN,
            ffi::AVPixelFormat::AV_PIX_FMT_VULKAN,
            "0",
            "no Vulkan device",
        )
    }

    /// The Vulkan device for a test, or `None` after saying why it cannot
    /// run here (a failure where every test must run).
    #[cfg(test)]
    pub(crate) fn vulkan_or_skip() -> Option<Self> {
        match Self::vulkan() {
            Ok(d) => Some(d),
            Err(why) => {
                spool_testkit::skipped(&format!(
                    "{why}: install mesa-vulkan-drivers (scripts/deps.sh does)"
                ))
                .expect("a device-memory test must run here");
                None
            }
        }
    }

    fn open(
        kind: ffi::AVHWDeviceType,
        format: ffi::AVPixelFormat,
        name: &str,
        what: &str,
    ) -> Result<Self, String> {
        let name = CString::new(name).map_err(|e| e.to_string())?;
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
            ffi::av_hwdevice_ctx_create(&mut buf, kind, name.as_ptr(), ptr::null_mut(), 0)
        };
        drop(scope);
        if ret < 0 || buf.is_null() {
            let said = said.lock().unwrap_or_else(|p| p.into_inner()).join("; ");
            let detail = if said.is_empty() {
                String::new()
            } else {
                format!(" ({said})")
            };
            return Err(format!("{what}: {}{detail}", ff::Error::from(ret)));
        }
        Ok(HwDevice { buf, format })
    }
}

/// Whether a CUDA device context opens on GPU `gpu` (for reports): `Err`
/// says why not, in FFmpeg's words.
pub fn check_cuda_device(gpu: u32) -> Result<(), String> {
    HwDevice::cuda(gpu).map(drop)
}

impl Drop for HwDevice {
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
pub(crate) fn attach(ctx: &mut ff::codec::Context, device: &HwDevice) {
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

/// A new reference to `f`'s buffers (`av_frame_ref`): no copy, and a
/// CUDA frame stays a CUDA frame with its frames context. ffmpeg-next's
/// `Clone` instead copies the pixels into a new system-memory frame, which
/// for a hardware frame yields a frame with no picture at all.
pub(crate) fn share(f: &ff::frame::Video) -> Result<ff::frame::Video, ff::Error> {
    let mut out = ff::frame::Video::empty();
    // SAFETY: `out` is a freshly allocated, empty AVFrame (as av_frame_ref
    // requires of its destination) owned by `out`; `f` is a live frame,
    // only read. On failure `out` is left empty and freed on drop.
    let ret = unsafe { ffi::av_frame_ref(out.as_mut_ptr(), f.as_ptr()) };
    if ret < 0 {
        return Err(ff::Error::from(ret));
    }
    Ok(out)
}

/// The pixel format of the system-memory copy of a CUDA frame (NV12 for
/// 8-bit 4:2:0, P010 for 10-bit), or `None` for a frame with no frames
/// context.
pub(crate) fn sw_format(f: &ff::frame::Video) -> Option<ff::format::Pixel> {
    // SAFETY: `f` wraps a live AVFrame; a non-null `hw_frames_ctx` is a
    // buffer reference whose data is an AVHWFramesContext (FFmpeg's
    // contract for hardware frames), only read here.
    unsafe {
        let frames = (*f.as_ptr()).hw_frames_ctx;
        if frames.is_null() || (*frames).data.is_null() {
            return None;
        }
        let ctx = (*frames).data as *const ffi::AVHWFramesContext;
        Some(ff::format::Pixel::from((*ctx).sw_format))
    }
}

/// Tells a filter graph's `buffer` source that its frames are CUDA frames
/// from `f`'s frames context (the decoder's pool), as FFmpeg requires of a
/// source of hardware frames before the graph is configured.
pub(crate) fn source_frames(
    src: &mut ff::filter::Context,
    f: &ff::frame::Video,
) -> Result<(), ff::Error> {
    // SAFETY: `src` is a `buffer` filter of a graph not configured yet
    // (the `&mut` borrow keeps it unshared); the parameters are allocated
    // here, filled with a borrowed reference that
    // `av_buffersrc_parameters_set` takes its own reference to, then freed
    // (av_free leaves the borrowed frames context alone). `f` outlives the
    // call.
    let ret = unsafe {
        let par = ffi::av_buffersrc_parameters_alloc();
        if par.is_null() {
            return Err(ff::Error::Other {
                errno: ff::util::error::ENOMEM,
            });
        }
        (*par).hw_frames_ctx = (*f.as_ptr()).hw_frames_ctx;
        let r = ffi::av_buffersrc_parameters_set(src.as_mut_ptr(), par);
        ffi::av_free(par.cast());
        r
    };
    if ret < 0 {
        return Err(ff::Error::from(ret));
    }
    Ok(())
}

/// Gives every filter of a parsed, not yet configured graph the device to
/// create hardware frames on (only `hwupload` uses it), as the CLI's
/// `-filter_hw_device` does.
pub(crate) fn filters_device(graph: &mut ff::filter::Graph, device: &HwDevice) {
    // SAFETY: the graph is live and unshared (`&mut`); `filters` holds
    // `nb_filters` valid filter contexts. Each takes its own reference to
    // the device, released with the filter (avfilter_free unrefs it); a
    // filter that already has one keeps it.
    unsafe {
        let g = graph.as_mut_ptr();
        for i in 0..(*g).nb_filters as usize {
            let f = *(*g).filters.add(i);
            if !f.is_null() && (*f).hw_device_ctx.is_null() {
                (*f).hw_device_ctx = ffi::av_buffer_ref(device.buf);
            }
        }
    }
}

/// Makes an encoder (before it opens) take frames in `device`'s memory
/// (CUDA) holding `sw` data: its pixel format becomes the device's and it
/// gets a frames context of that size and format. NVENC then encodes
/// straight from GPU memory: it takes the CUDA context from this frames
/// context and registers each frame from the frame's own (the filter's)
/// context (`ff_nvenc_encode_init` and `nvenc_register_frame`,
/// libavcodec/nvenc.c, FFmpeg 5.1), so the filter's pool need not be this
/// one.
pub(crate) fn encoder_frames(
    enc: &mut ff::encoder::video::Video,
    device: &HwDevice,
    width: u32,
    height: u32,
    sw: ff::format::Pixel,
) -> Result<(), String> {
    let (w, h) = (
        i32::try_from(width).map_err(|e| e.to_string())?,
        i32::try_from(height).map_err(|e| e.to_string())?,
    );
    // SAFETY: `device.buf` is a live device reference; the frames
    // context allocated from it is filled before init and either handed
    // to the encoder context (which unrefs it when freed) or unreffed here
    // on failure. `enc` owns a live, unopened AVCodecContext, unshared
    // through `&mut`; any frames context it held is released first.
    let ret = unsafe {
        let mut frames = ffi::av_hwframe_ctx_alloc(device.buf);
        if frames.is_null() {
            return Err("could not allocate a frames context on the GPU".into());
        }
        let fc = (*frames).data as *mut ffi::AVHWFramesContext;
        (*fc).format = device.format;
        (*fc).sw_format = sw.into();
        (*fc).width = w;
        (*fc).height = h;
        let r = ffi::av_hwframe_ctx_init(frames);
        if r < 0 {
            ffi::av_buffer_unref(&mut frames);
        } else {
            let c = enc.as_mut_ptr();
            ffi::av_buffer_unref(&mut (*c).hw_frames_ctx);
            (*c).hw_frames_ctx = frames;
            (*c).pix_fmt = device.format;
        }
        r
    };
    if ret < 0 {
        return Err(format!(
            "no frames context on the GPU for the encoder: {}",
            ff::Error::from(ret)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoder's frames context, made on a real device (Mesa's
    /// software Vulkan, lavapipe, standing in for a GPU): the context takes
    /// the device's pixel format, a second call replaces the first context
    /// (released, not leaked or freed twice), a size the device refuses is
    /// an error that leaves the encoder as it was, and everything is freed
    /// with the encoder, before and after the device.
    #[test]
    fn an_encoder_gets_a_frames_context_on_the_device_and_frees_it() {
        ff::init().expect("FFmpeg initialises");
        let Some(device) = HwDevice::vulkan_or_skip() else {
            return;
        };
        let size = |enc: &mut ff::encoder::video::Video| {
            // SAFETY: test-only read of the frames context just set.
            unsafe {
                let frames = (*enc.as_mut_ptr()).hw_frames_ctx;
                let fc = (*frames).data as *const ffi::AVHWFramesContext;
                ((*fc).width, (*fc).height)
            }
        };
        let codec = ff::encoder::find_by_name("libx264").expect("libx264");
        let mut kept = Vec::new();
        for round in 0..3 {
            let mut enc = ff::codec::context::Context::new_with_codec(codec)
                .encoder()
                .video()
                .expect("a video encoder context");
            enc.set_format(ff::format::Pixel::YUV420P);
            let err = encoder_frames(&mut enc, &device, 0, 0, ff::format::Pixel::NV12)
                .expect_err("a 0x0 frames context is refused");
            assert!(err.starts_with("no frames context on the GPU"), "{err}");
            assert_eq!(enc.format(), ff::format::Pixel::YUV420P);
            encoder_frames(&mut enc, &device, 1280, 720, ff::format::Pixel::NV12)
                .expect("a frames context");
            encoder_frames(&mut enc, &device, 640, 360, ff::format::Pixel::NV12)
                .expect("a second one replaces it");
            assert_eq!(enc.format(), ff::format::Pixel::VULKAN);
            assert_eq!(size(&mut enc), (640, 360));
            if round == 2 {
                kept.push(enc);
            }
        }
        // The last encoder outlives the device handle: it holds its own
        // reference through the frames context.
        drop(device);
        assert_eq!(size(&mut kept[0]), (640, 360));
    }

    /// A decoder given a device its hardware decoder cannot use decodes on
    /// the CPU, every frame, without an error: `get_cuda` picks CUDA, FFmpeg
    /// refuses the setup (the device is Vulkan's, standing in for a GPU
    /// NVDEC will not take a stream on: "Invalid setup for format cuda: does
    /// not match the type of the provided device context"), drops CUDA from
    /// the list and asks again, and `get_cuda` takes the software format.
    /// That is the path a stream NVDEC refuses (4:2:2, an unsupported
    /// profile) takes on a GPU, and what the result then reports as
    /// `NVDEC did not take this stream`.
    #[test]
    fn a_decoder_whose_hwaccel_will_not_start_decodes_on_the_cpu() {
        ff::init().expect("FFmpeg initialises");
        let Some(device) = HwDevice::vulkan_or_skip() else {
            return;
        };
        let dir = tempfile::tempdir().expect("a temp dir");
        let clip = dir.path().join("clip.mp4");
        spool_testkit::lavfi_video(&clip, 320, 240, 1.0, &[]).expect("a clip");
        let mut ictx = ff::format::input(&clip).expect("the clip opens");
        let stream = ictx
            .streams()
            .best(ff::media::Type::Video)
            .expect("a video stream");
        let index = stream.index();
        let mut ctx = ff::codec::context::Context::from_parameters(stream.parameters())
            .expect("decoder parameters");
        let codec = ff::decoder::find(ctx.id()).expect("an H.264 decoder");
        assert!(nvdec_decodes(&codec), "this FFmpeg decodes H.264 on NVDEC");
        attach(&mut ctx, &device);
        drop(device);
        let mut decoder = ctx
            .decoder()
            .open_as(codec)
            .and_then(|o| o.video())
            .expect("the decoder opens");
        let mut frame = ff::frame::Video::empty();
        let (mut frames, mut on_device) = (0, 0);
        let mut take = |d: &mut ff::decoder::Video| {
            while d.receive_frame(&mut frame).is_ok() {
                frames += 1;
                if is_cuda(&frame) || sw_format(&frame).is_some() {
                    on_device += 1;
                }
                assert_eq!(frame.format(), ff::format::Pixel::YUV420P);
            }
        };
        for (s, packet) in ictx.packets() {
            if s.index() == index {
                decoder.send_packet(&packet).expect("a packet decodes");
                take(&mut decoder);
            }
        }
        decoder.send_eof().expect("the decoder flushes");
        take(&mut decoder);
        assert_eq!((frames, on_device), (25, 0));
    }
}
