//! FFmpeg's own log messages (`av_log`), routed to the encode they belong to.
//!
//! FFmpeg logs through one process-wide callback. Left alone it writes to
//! stderr, unattributed; with several encodes in one worker nobody can tell
//! which job a "corrupt macroblock" warning was about. [`scope`] attaches a
//! sink to the encode running on the calling thread: a message goes to it
//! when it is logged on that thread, or by a decoder or encoder context that
//! encode opened ([`tag`]) — from FFmpeg's own frame threads too, whose
//! context copies keep the `opaque` tag. Messages of warning level and above
//! are formatted; the rest (info, verbose, debug) cost one comparison. A
//! message no scope claims is logged through `tracing` (target `ffmpeg`).

// FFI: the log callback and the codec context's `opaque` field.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};

use ffmpeg_next as ff;

/// How serious an FFmpeg message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `AV_LOG_PANIC`, `AV_LOG_FATAL` and `AV_LOG_ERROR`.
    Error,
    /// `AV_LOG_WARNING`.
    Warning,
}

/// Where one encode's FFmpeg messages go. Called from FFmpeg's threads:
/// keep it short and never block on the encode.
pub type Sink = Arc<dyn Fn(Level, &str) + Send + Sync>;

static SINKS: Mutex<Option<HashMap<u64, Sink>>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static INSTALL: Once = Once::new();

thread_local! {
    /// The scope of the encode running on this thread (0: none).
    static CURRENT: Cell<u64> = const { Cell::new(0) };
}

/// An encode's claim on FFmpeg's messages; dropping it ends the claim.
#[must_use = "messages are routed only while the scope lives"]
pub struct Scope {
    id: u64,
    previous: u64,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope").field("id", &self.id).finish()
    }
}

/// Routes FFmpeg's warnings and errors about the encode run on this thread
/// to `sink`, until the returned scope drops.
pub fn scope(sink: Sink) -> Scope {
    install();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    sinks(|m| m.insert(id, sink));
    let previous = CURRENT.with(|c| c.replace(id));
    Scope { id, previous }
}

impl Drop for Scope {
    fn drop(&mut self) {
        sinks(|m| m.remove(&self.id));
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// Tags a codec context (before it is opened) with this thread's scope, so
/// that what it logs from its own threads reaches the scope's sink.
pub(crate) fn tag(ctx: &mut ff::codec::Context) {
    let id = CURRENT.with(Cell::get);
    if id == 0 {
        return;
    }
    // SAFETY: `ctx` owns a live AVCodecContext (the `&mut` borrow keeps it
    // alive and unshared). `opaque` is a field reserved for the user, which
    // neither ffmpeg-next nor this crate uses otherwise; FFmpeg copies it
    // into its frame-thread contexts and never dereferences it. An id, not
    // a pointer, is stored.
    unsafe {
        (*ctx.as_mut_ptr()).opaque = id as usize as *mut c_void;
    }
}

fn sinks<T>(f: impl FnOnce(&mut HashMap<u64, Sink>) -> T) -> T {
    let mut guard = SINKS.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

/// Sends every FFmpeg message through this module (done by `Encoder::new`
/// and the first [`scope`]).
pub(crate) fn install() {
    INSTALL.call_once(|| {
        // SAFETY: `callback` has the signature av_log_set_callback expects
        // and stays valid for the life of the process (a plain function).
        unsafe { ff::ffi::av_log_set_callback(Some(callback)) }
    });
}

/// The scope a message belongs to: this thread's, or the one tagged on the
/// codec context that logged it.
///
/// # Safety
/// `avcl` is null or the context pointer FFmpeg passed to its log callback:
/// a struct whose first field is a pointer to its AVClass.
unsafe fn scope_of(avcl: *mut c_void) -> u64 {
    let current = CURRENT.with(Cell::get);
    if current != 0 || avcl.is_null() {
        return current;
    }
    // SAFETY: by the contract above, `avcl` points to a struct starting
    // with an `AVClass *`; only when that class is AVCodecContext's is the
    // struct read as an AVCodecContext.
    unsafe {
        let class = *(avcl as *const *const ff::ffi::AVClass);
        if class == ff::ffi::avcodec_get_class() {
            (*(avcl as *const ff::ffi::AVCodecContext)).opaque as usize as u64
        } else {
            0
        }
    }
}

/// FFmpeg's log callback. Never unwinds into C.
unsafe extern "C" fn callback(
    avcl: *mut c_void,
    level: c_int,
    fmt: *const c_char,
    vl: *mut ff::ffi::__va_list_tag,
) {
    let lvl = level & 0xff;
    if lvl > ff::ffi::AV_LOG_WARNING {
        return;
    }
    let mut buf = [0 as c_char; 1024];
    let mut print_prefix: c_int = 1;
    // SAFETY: FFmpeg passes its own avcl, fmt and va_list, forwarded
    // untouched once; `buf` is writable for the length given, which
    // av_log_format_line2 NUL-terminates within.
    unsafe {
        ff::ffi::av_log_format_line2(
            avcl,
            level,
            fmt,
            vl,
            buf.as_mut_ptr(),
            buf.len() as c_int,
            &mut print_prefix,
        );
    }
    // SAFETY: NUL-terminated by the call above.
    let raw = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    // SAFETY: `avcl` is what FFmpeg passed.
    let id = unsafe { scope_of(avcl) };
    let _ = std::panic::catch_unwind(|| dispatch(id, lvl, &raw));
}

fn dispatch(id: u64, lvl: c_int, raw: &str) {
    let message = tidy(raw);
    if message.is_empty() {
        return;
    }
    let level = if lvl <= ff::ffi::AV_LOG_ERROR {
        Level::Error
    } else {
        Level::Warning
    };
    let sink = if id == 0 {
        None
    } else {
        sinks(|m| m.get(&id).cloned())
    };
    match sink {
        Some(sink) => sink(level, &message),
        None => match level {
            Level::Error => tracing::error!(target: "ffmpeg", "{message}"),
            Level::Warning => tracing::warn!(target: "ffmpeg", "{message}"),
        },
    }
}

/// One line without its newline, and `[h264 @ 0x55d0…] ` shortened to
/// `[h264] ` (the address means nothing to a reader).
fn tidy(raw: &str) -> String {
    let line = raw.trim_end();
    if let Some(rest) = line.strip_prefix('[')
        && let Some((name, after)) = rest.split_once(" @ 0x")
        && let Some((_, tail)) = after.split_once(']')
    {
        return format!("[{name}]{tail}");
    }
    line.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_leave_the_prefix() {
        assert_eq!(
            tidy("[h264 @ 0x55d0c0ffee00] error while decoding MB 3 4\n"),
            "[h264] error while decoding MB 3 4"
        );
        assert_eq!(tidy("plain message\n"), "plain message");
        assert_eq!(tidy("[broken @ 0x12"), "[broken @ 0x12");
    }

    #[test]
    fn scopes_nest_and_unregister() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let outer = scope(Arc::new(move |_, m| {
            g.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(m.to_owned())
        }));
        let id = CURRENT.with(Cell::get);
        dispatch(id, ff::ffi::AV_LOG_WARNING, "one");
        {
            let _inner = scope(Arc::new(|_, _| {}));
            dispatch(
                CURRENT.with(Cell::get),
                ff::ffi::AV_LOG_WARNING,
                "elsewhere",
            );
        }
        assert_eq!(CURRENT.with(Cell::get), id);
        drop(outer);
        dispatch(id, ff::ffi::AV_LOG_WARNING, "after the scope");
        assert_eq!(*got.lock().unwrap_or_else(|p| p.into_inner()), ["one"]);
        assert_eq!(CURRENT.with(Cell::get), 0);
    }
}
