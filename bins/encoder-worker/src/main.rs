//! `spool-encoder-worker`: parses the settings and runs the worker (see the
//! library, `spool_encoder_worker`, for everything else).

use std::process::ExitCode;

use clap::Parser;

/// mimalloc for the worker's own (Rust) allocations: a job's life is many
/// small allocations freed across threads, where glibc's allocator spent
/// about a tenth of a no-op job's worker CPU (docs/performance.md). FFmpeg's
/// allocations stay with the C library's allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = spool_encoder_worker::Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spool-encoder-worker: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(spool_encoder_worker::run(args));
    // Dropping the runtime would wait for every blocking thread.
    rt.shutdown_timeout(spool_encoder_worker::EXIT_WAIT);
    code
}
