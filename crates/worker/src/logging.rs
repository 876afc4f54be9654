//! Log set-up for binaries and examples: `tracing` to stderr, text or JSON
//! (`SPOOL_LOG_FORMAT`), filtered by `RUST_LOG` (default `info`). Text is
//! coloured only on a terminal: a file or a pipe gets no escape codes.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; a second call does nothing.
pub fn init_logging(format: LogFormat) {
    init_logging_to(format, std::io::stderr, std::io::stderr().is_terminal());
}

/// [`init_logging`] writing to what `writer` makes (a program that takes
/// over its own stderr, to route what libraries print there, logs to the
/// original one); `ansi` colours text output.
pub fn init_logging_to<W>(format: LogFormat, writer: W, ansi: bool)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
