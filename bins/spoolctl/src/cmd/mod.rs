//! One file per `spoolctl` command; `main.rs` parses and dispatches.

mod check;
mod dead;
mod encode;
mod enqueue;
mod inspect;
mod keys;
mod promote;
mod simulate;
mod stats;
mod terminal;
mod watch;
mod workers;

pub(crate) use check::*;
pub(crate) use dead::*;
pub(crate) use encode::*;
pub(crate) use enqueue::*;
pub(crate) use inspect::*;
pub(crate) use keys::*;
pub(crate) use promote::*;
pub(crate) use simulate::*;
pub(crate) use stats::*;
pub(crate) use terminal::safe;
pub(crate) use watch::*;
pub(crate) use workers::*;
