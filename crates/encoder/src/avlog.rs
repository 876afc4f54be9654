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
    /// Not `Send`: dropping it restores this thread's scope, so it must
    /// drop on the thread that made it.
    _thread: std::marker::PhantomData<*const ()>,
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
    Scope {
        id,
        previous,
        _thread: std::marker::PhantomData,
    }
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

/// Messages one scope (or the unscoped rest) may log per
/// [`RATE_WINDOW`]; the rest are counted and reported in one line.
const RATE_LIMIT: u32 = 20;
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// Per scope: the window's start, messages logged in it, and how many were
/// dropped (or repeated the previous message) since the last report.
struct Rate {
    window: std::time::Instant,
    logged: u32,
    dropped: u64,
    last: String,
}

static RATES: Mutex<Option<HashMap<u64, Rate>>> = Mutex::new(None);

/// Whether `message` may be logged now for scope `id`; with a line saying
/// how many were held back before it, when any were.
fn admit(id: u64, message: &str) -> (bool, Option<String>) {
    let mut guard = RATES.lock().unwrap_or_else(|p| p.into_inner());
    let rates = guard.get_or_insert_with(HashMap::new);
    // Scopes come and go: forget them when the map grows.
    if rates.len() > 1024 {
        rates.retain(|_, r| r.window.elapsed() < RATE_WINDOW * 60);
    }
    let now = std::time::Instant::now();
    let r = rates.entry(id).or_insert_with(|| Rate {
        window: now,
        logged: 0,
        dropped: 0,
        last: String::new(),
    });
    if now.duration_since(r.window) >= RATE_WINDOW {
        r.window = now;
        r.logged = 0;
    }
    if message == r.last || r.logged >= RATE_LIMIT {
        r.dropped += 1;
        return (false, None);
    }
    r.logged += 1;
    r.last = message.to_owned();
    let held = std::mem::take(&mut r.dropped);
    (
        true,
        (held > 0).then(|| {
            format!("({held} FFmpeg messages repeated or over {RATE_LIMIT}/s were not logged)")
        }),
    )
}

/// Scope id for lines encoder libraries print to stderr themselves.
const LIBRARY: u64 = u64::MAX;

/// Logs one line an encoder library printed to stderr (see the encoder
/// worker's stderr capture): made inert, rate-limited with FFmpeg's own
/// messages' rules, and logged through `tracing` (target `encoder_lib`).
pub fn library_line(raw: &str) {
    let line = tidy(raw);
    if line.is_empty() {
        return;
    }
    let (admitted, held) = admit(LIBRARY, &line);
    if let Some(h) = held {
        tracing::warn!(target: "encoder_lib", "{h}");
    }
    if admitted {
        tracing::warn!(target: "encoder_lib", "{line}");
    }
}

fn dispatch(id: u64, lvl: c_int, raw: &str) {
    let message = tidy(raw);
    if message.is_empty() {
        return;
    }
    let (admitted, held) = admit(id, &message);
    if !admitted {
        return;
    }
    if let Some(h) = held {
        deliver(id, Level::Warning, &h);
    }
    let level = if lvl <= ff::ffi::AV_LOG_ERROR {
        Level::Error
    } else {
        Level::Warning
    };
    deliver(id, level, &message);
}

fn deliver(id: u64, level: Level, message: &str) {
    let sink = if id == 0 {
        None
    } else {
        sinks(|m| m.get(&id).cloned())
    };
    match sink {
        Some(sink) => sink(level, message),
        None => match level {
            Level::Error => tracing::error!(target: "ffmpeg", "{message}"),
            Level::Warning => tracing::warn!(target: "ffmpeg", "{message}"),
        },
    }
}

/// One line without its newline, `[h264 @ 0x55d0…] ` shortened to
/// `[h264] ` (the address means nothing to a reader), and every control
/// character escaped (`\n`, `\r`, `\u{1b}`): FFmpeg prints container
/// metadata (an MKV DocType, a title) into its messages, and a newline or
/// an escape sequence there would forge a log line or reach a terminal.
pub fn tidy(raw: &str) -> String {
    let line = raw.trim_end_matches(['\n', '\r', ' ']);
    let line = match line.strip_prefix('[') {
        Some(rest) => match rest
            .split_once(" @ 0x")
            .and_then(|(name, after)| after.split_once(']').map(|(_, tail)| (name, tail)))
        {
            Some((name, tail)) => format!("[{name}]{tail}"),
            None => line.to_owned(),
        },
        None => line.to_owned(),
    };
    sanitize(&line)
}

/// `s` with control characters (C0, DEL, C1) and bidirectional overrides
/// escaped, so it is one inert line.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
        // Metadata with a newline, a CR and an escape sequence stays one
        // inert line.
        let forged = tidy("[matroska @ 0x1] DocType webm\nERROR forged line\r\u{1b}[31mred\n");
        assert!(!forged.contains(['\n', '\r', '\u{1b}']), "{forged}");
        assert!(
            forged.contains("\\n") && forged.contains("\\u{1b}"),
            "{forged}"
        );
    }

    #[test]
    fn repeats_and_floods_are_held_back_and_counted() {
        let id = 9_999_999;
        assert_eq!(admit(id, "a"), (true, None));
        for _ in 0..1000 {
            assert!(!admit(id, "a").0, "a repeat is held back");
        }
        let (ok, held) = admit(id, "b");
        assert!(ok && held.is_some_and(|h| h.contains("1000")));
        let admitted = (0..100).filter(|i| admit(id, &format!("m{i}")).0).count();
        assert!(
            admitted < 100 && admitted as u32 <= RATE_LIMIT,
            "{admitted}"
        );
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
