//! The Lua scripts, one file per state change, each with `lib.lua` prepended
//! and, where a script needs them, `lib_flows.lua` (it can end a job, so a
//! flow's parent must learn it) or `lib_enqueue.lua` (it creates jobs).
//!
//! `redis::Script` sends them with EVALSHA and, on NOSCRIPT (a restarted or
//! failed-over server has an empty script cache), loads them and retries.
//!
//! Why not all of it in every script: each call runs its prelude, creating
//! the closure of every function it defines, at a cost that grows with the
//! outer variables each one captures (about 2.4 µs a call for the flow
//! helpers alone on the development machine), and a heartbeat runs once per
//! job and beat.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($name:ident, $($file:literal),+) => {
        pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(include_str!("scripts/lib.lua"), $(include_str!($file)),+))
        });
    };
}

script!(ENQUEUE, "scripts/lib_enqueue.lua", "scripts/enqueue.lua");
script!(RESERVE, "scripts/lib_flows.lua", "scripts/reserve.lua");
script!(SETTLE, "scripts/lib_flows.lua", "scripts/settle.lua");
script!(HEARTBEAT, "scripts/heartbeat.lua");
script!(CANCEL, "scripts/lib_flows.lua", "scripts/cancel.lua");
script!(SWEEP, "scripts/lib_flows.lua", "scripts/sweep.lua");
script!(DEAD, "scripts/lib_flows.lua", "scripts/dead.lua");
script!(CHECK, "scripts/lib_flows.lua", "scripts/check.lua");
script!(PAUSE, "scripts/pause.lua");
script!(LOG, "scripts/log.lua");
script!(WATCH, "scripts/watch.lua");
script!(
    FLOW,
    "scripts/lib_flows.lua",
    "scripts/lib_enqueue.lua",
    "scripts/flow.lua"
);

/// The parts each script is made of, after `lib.lua`, for the producer
/// libraries and tests that compose them as this crate does.
pub const SCRIPT_PARTS: [(&str, &[&str]); 12] = [
    ("enqueue.lua", &["lib_enqueue.lua"]),
    ("reserve.lua", &["lib_flows.lua"]),
    ("settle.lua", &["lib_flows.lua"]),
    ("heartbeat.lua", &[]),
    ("cancel.lua", &["lib_flows.lua"]),
    ("sweep.lua", &["lib_flows.lua"]),
    ("dead.lua", &["lib_flows.lua"]),
    ("check.lua", &["lib_flows.lua"]),
    ("pause.lua", &[]),
    ("log.lua", &[]),
    ("watch.lua", &[]),
    ("flow.lua", &["lib_flows.lua", "lib_enqueue.lua"]),
];

#[cfg(test)]
mod tests {
    use super::SCRIPT_PARTS;

    /// Every lib.lua function that may end a job, and so reach a flow's
    /// parent through `child_ended` (defined only by lib_flows.lua).
    const ENDS_A_JOB: [&str; 10] = [
        "to_dead(",
        "to_cancelled(",
        "corrupt(",
        "quarantine(",
        "promote_due(",
        "recover_expired(",
        "child_ended(",
        "cancel_job(",
        "rerun(",
        "revive(",
    ];

    fn source(name: &str) -> &'static str {
        match name {
            "enqueue.lua" => include_str!("scripts/enqueue.lua"),
            "reserve.lua" => include_str!("scripts/reserve.lua"),
            "settle.lua" => include_str!("scripts/settle.lua"),
            "heartbeat.lua" => include_str!("scripts/heartbeat.lua"),
            "cancel.lua" => include_str!("scripts/cancel.lua"),
            "sweep.lua" => include_str!("scripts/sweep.lua"),
            "dead.lua" => include_str!("scripts/dead.lua"),
            "check.lua" => include_str!("scripts/check.lua"),
            "pause.lua" => include_str!("scripts/pause.lua"),
            "log.lua" => include_str!("scripts/log.lua"),
            "watch.lua" => include_str!("scripts/watch.lua"),
            "flow.lua" => include_str!("scripts/flow.lua"),
            "lib_enqueue.lua" => include_str!("scripts/lib_enqueue.lua"),
            other => panic!("no script {other}"),
        }
    }

    /// Code without comments: what a script calls.
    fn code(text: &str) -> String {
        text.lines()
            .map(|l| l.split("--").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn scripts_without_the_flow_helpers_never_end_a_job() {
        for (name, parts) in SCRIPT_PARTS {
            if parts.contains(&"lib_flows.lua") {
                continue;
            }
            let mut text = code(source(name));
            for p in parts {
                text.push_str(&code(source(p)));
            }
            for call in ENDS_A_JOB {
                assert!(
                    !text.contains(call),
                    "{name} calls {call}..) without lib_flows.lua: add it to its parts in scripts.rs"
                );
            }
        }
    }

    #[test]
    fn the_macro_and_the_table_agree() {
        // The table is what the producer libraries and tests follow: a
        // script composed differently here would differ there.
        let full = |name: &str| -> String {
            let parts = SCRIPT_PARTS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, p)| *p)
                .unwrap_or_default();
            let mut s = include_str!("scripts/lib.lua").to_owned();
            for p in parts {
                s.push_str(match *p {
                    "lib_flows.lua" => include_str!("scripts/lib_flows.lua"),
                    other => source(other),
                });
            }
            s.push_str(source(name));
            s
        };
        for (name, script) in [
            ("enqueue.lua", &*super::ENQUEUE),
            ("reserve.lua", &*super::RESERVE),
            ("settle.lua", &*super::SETTLE),
            ("heartbeat.lua", &*super::HEARTBEAT),
            ("cancel.lua", &*super::CANCEL),
            ("sweep.lua", &*super::SWEEP),
            ("dead.lua", &*super::DEAD),
            ("check.lua", &*super::CHECK),
            ("pause.lua", &*super::PAUSE),
            ("log.lua", &*super::LOG),
            ("watch.lua", &*super::WATCH),
            ("flow.lua", &*super::FLOW),
        ] {
            assert_eq!(
                script.get_hash(),
                redis::Script::new(&full(name)).get_hash(),
                "{name}"
            );
        }
    }
}
