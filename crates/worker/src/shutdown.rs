//! The shutdown signals, as two tokens threaded through the runtime.
//!
//! `drain` starts a graceful drain (step 1 of the drain contract in docs/operations.md, "Draining":
//! stop reserving, let in-flight jobs finish up to the drain timeout); `force`
//! skips the wait and releases in-flight jobs at once. SIGTERM fires `drain`; a
//! second SIGTERM, or SIGINT, fires `force` too.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio_util::sync::CancellationToken;

/// The two stages of a shutdown.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Stop taking work; finish what is running, up to the drain timeout.
    pub drain: CancellationToken,
    /// Stop now: release what is running.
    pub force: CancellationToken,
}

impl Shutdown {
    /// Two fresh tokens.
    pub fn new() -> Self {
        Self::default()
    }

    /// A shutdown that drains when `token` fires (for embedding).
    pub fn from_token(token: CancellationToken) -> Self {
        Shutdown {
            drain: token,
            force: CancellationToken::new(),
        }
    }

    /// Listens for SIGTERM and SIGINT on a thread of its own (signal-hook's
    /// blocking iterator; cancelling a token needs no async context) and fires
    /// the tokens as the drain contract says. [`crate::Worker::run`] calls
    /// this; an embedding that owns its signals uses
    /// [`crate::Worker::run_until`] instead and never installs handlers.
    pub fn listen_for_signals(&self) -> std::io::Result<()> {
        let mut signals = Signals::new([SIGTERM, SIGINT])?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("spool-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if sig == SIGTERM && !me.drain.is_cancelled() {
                        tracing::info!(
                            "SIGTERM: draining (a second SIGTERM or SIGINT stops at once)"
                        );
                        me.drain.cancel();
                    } else {
                        tracing::warn!(signal = sig, "stopping now: releasing in-flight jobs");
                        me.drain.cancel();
                        me.force.cancel();
                    }
                }
            })?;
        Ok(())
    }
}
