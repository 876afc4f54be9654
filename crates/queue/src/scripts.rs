//! The Lua scripts, one file per state change, each with `lib.lua` prepended.
//!
//! `redis::Script` sends them with EVALSHA and, on NOSCRIPT (a restarted or
//! failed-over server has an empty script cache), loads them and retries.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($name:ident, $file:literal) => {
        pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(
                include_str!("scripts/lib.lua"),
                include_str!($file)
            ))
        });
    };
}

script!(ENQUEUE, "scripts/enqueue.lua");
script!(RESERVE, "scripts/reserve.lua");
script!(SETTLE, "scripts/settle.lua");
script!(HEARTBEAT, "scripts/heartbeat.lua");
script!(CANCEL, "scripts/cancel.lua");
script!(SWEEP, "scripts/sweep.lua");
script!(DEAD, "scripts/dead.lua");
script!(CHECK, "scripts/check.lua");
script!(PAUSE, "scripts/pause.lua");
script!(LOG, "scripts/log.lua");
script!(WATCH, "scripts/watch.lua");
script!(FLOW, "scripts/flow.lua");
