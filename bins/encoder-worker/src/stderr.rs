//! What encoder libraries print straight to stderr (x265's and SVT-AV1's
//! banners and warnings, a decoder's flood about damaged frames), routed
//! through the logger: each line made inert (control characters escaped),
//! rate-limited, and logged as a `tracing` event (target `encoder_lib`), so
//! JSON logs stay JSON and a crafted input cannot forge a line or flood
//! the log.
//!
//! fd 2 becomes the write end of a pipe (non-blocking: a library never
//! waits on the logger; what a full pipe refuses is lost, not waited
//! for), read by one thread; the logger itself writes to a copy of the
//! original stderr.

use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// The original stderr, for the logger.
#[derive(Clone)]
pub(crate) struct Original(Arc<std::fs::File>);

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Original {
    type Writer = &'w std::fs::File;
    fn make_writer(&'w self) -> Self::Writer {
        &self.0
    }
}

/// Takes fd 2 over; returns the original stderr for the logger, or `None`
/// (stderr left alone) when a pipe cannot be made.
pub(crate) fn capture() -> Option<Original> {
    let original: OwnedFd = rustix::io::dup(rustix::stdio::stderr()).ok()?;
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).ok()?;
    let flags = rustix::fs::fcntl_getfl(&w).ok()?;
    rustix::fs::fcntl_setfl(&w, flags | rustix::fs::OFlags::NONBLOCK).ok()?;
    rustix::stdio::dup2_stderr(&w).ok()?;
    drop(w);
    std::thread::Builder::new()
        .name("stderr-lines".into())
        .spawn(move || {
            let mut lines = BufReader::new(std::fs::File::from(r));
            let mut buf = Vec::new();
            loop {
                buf.clear();
                // A line is cut at 4 KiB: the rest is the next "line".
                match std::io::Read::take(&mut lines, 4096).read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => spool_encoder::avlog::library_line(&String::from_utf8_lossy(&buf)),
                }
            }
        })
        .ok()?;
    let original = Arc::new(std::fs::File::from(original));
    // A panic's message goes to the original stderr directly: the reader
    // thread may not get to it before the process ends.
    let to = original.clone();
    std::panic::set_hook(Box::new(move |info| {
        use std::io::Write;
        let _ = writeln!(&*to, "{info}");
    }));
    Some(Original(original))
}
