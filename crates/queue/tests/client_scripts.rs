//! The producer libraries speak the queue's protocol from copies: the Lua
//! scripts (`scripts/sync-client-scripts.sh` makes them), the key names and
//! the limits. A copy that differs would speak another protocol, so it
//! fails here. Nothing is skipped: the clients live in this repository.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The scripts the producer libraries run.
const CLIENT_SCRIPTS: [&str; 9] = [
    "lib.lua",
    "lib_flows.lua",
    "lib_enqueue.lua",
    "enqueue.lua",
    "cancel.lua",
    "dead.lua",
    "pause.lua",
    "watch.lua",
    "flow.lua",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> Result<String, String> {
    std::fs::read_to_string(root().join(rel)).map_err(|e| format!("{rel}: {e}"))
}

#[test]
fn client_libraries_compose_each_script_as_the_crate_does() -> Result<(), String> {
    let python = read("clients/python/src/spool_client/_core.py")?;
    let node = read("clients/node/src/index.ts")?;
    for name in CLIENT_SCRIPTS.iter().filter(|n| !n.starts_with("lib")) {
        let parts = spool_queue::SCRIPT_PARTS
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .ok_or_else(|| format!("spool_queue::SCRIPT_PARTS has no {name}"))?;
        let quoted: Vec<String> = parts.iter().map(|p| format!("\"{p}\"")).collect();
        let entry = format!("\"{name}\": [{}]", quoted.join(", "));
        for (lang, text) in [("python", &python), ("node", &node)] {
            if !text.contains(&entry) {
                return Err(format!(
                    "the {lang} library's SCRIPT_PARTS lacks `{entry}` (spool_queue::SCRIPT_PARTS)"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn client_libraries_carry_the_crates_own_scripts() -> Result<(), String> {
    let lua_ts = read("clients/node/src/lua.ts")?;
    for name in CLIENT_SCRIPTS {
        let original = read(&format!("crates/queue/src/scripts/{name}"))?;
        for dir in [
            "clients/python/src/spool_client/scripts",
            "clients/node/scripts",
        ] {
            if read(&format!("{dir}/{name}"))? != original {
                return Err(format!(
                    "{dir}/{name} differs from crates/queue/src/scripts/{name}: run scripts/sync-client-scripts.sh"
                ));
            }
        }
        // The Node package's embedded copy (JSON string literals).
        let embedded = lua_ts
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("\"{name}\": ")))
            .and_then(|v| serde_json::from_str::<String>(v.trim_end_matches(',')).ok());
        if embedded.as_deref() != Some(original.as_str()) {
            return Err(format!(
                "clients/node/src/lua.ts holds another {name}: run scripts/sync-client-scripts.sh"
            ));
        }
    }
    Ok(())
}

/// `NAME = <integer expression>` assignments (`1024 * 1024`, `86_400`,
/// `31622400000   -- comment`) in a Python, TypeScript or Lua file.
fn constants(text: &str) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line
            .trim()
            .trim_start_matches("export ")
            .trim_start_matches("const ")
            .trim_start_matches("local ");
        let Some((name, expr)) = line.split_once(" = ") else {
            continue;
        };
        if !name.bytes().all(|c| c.is_ascii_uppercase() || c == b'_') {
            continue;
        }
        let expr = expr.split("--").next().unwrap_or("");
        let expr = expr.split("//").next().unwrap_or("");
        let expr = expr
            .split('#')
            .next()
            .unwrap_or("")
            .trim()
            .trim_end_matches(';');
        let value = expr.split('*').try_fold(1u64, |acc, f| {
            let f = f.trim().replace('_', "");
            f.parse::<u64>().ok().map(|f| acc * f)
        });
        if let Some(v) = value {
            out.insert(name.to_owned(), v);
        }
    }
    out
}

/// Where a constant must agree: (language, its constants).
type Places<'a> = &'a [(&'a str, &'a HashMap<String, u64>)];

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[test]
fn key_names_and_limits_agree_in_every_language() -> Result<(), String> {
    use spool_queue as q;
    let lua = constants(&read("crates/queue/src/scripts/lib.lua")?);
    let py_text = read("clients/python/src/spool_client/_core.py")?;
    let py = constants(&py_text);
    let node_text = read("clients/node/src/index.ts")?;
    let node = constants(&node_text);
    let want: [(&str, u64, Places<'_>); 15] = [
        (
            "MAX_ATTEMPTS",
            q::MAX_ATTEMPTS.into(),
            &[("lua", &lua), ("python", &py)],
        ),
        (
            "MAX_DELAY_MS",
            ms(q::MAX_DELAY),
            &[("lua", &lua), ("python", &py)],
        ),
        (
            "MAX_BACKOFF_MS",
            ms(q::MAX_BACKOFF),
            &[("lua", &lua), ("python", &py)],
        ),
        (
            "MAX_LEASE_MS",
            ms(q::MAX_LEASE),
            &[("lua", &lua), ("python", &py)],
        ),
        (
            "MAX_RETENTION_S",
            q::MAX_RETENTION.as_secs(),
            &[("lua", &lua), ("python", &py)],
        ),
        (
            "MAX_TIMEOUT_MS",
            ms(q::MAX_TIMEOUT),
            &[("lua", &lua), ("python", &py)],
        ),
        ("MAX_BATCH", q::MAX_BATCH as u64, &[("lua", &lua)]),
        (
            "DEFAULT_MAX_ATTEMPTS",
            q::DEFAULT_MAX_ATTEMPTS.into(),
            &[("python", &py)],
        ),
        (
            "DEFAULT_BACKOFF_MS",
            ms(q::DEFAULT_BACKOFF),
            &[("python", &py)],
        ),
        (
            "DEFAULT_BACKOFF_MAX_MS",
            ms(q::DEFAULT_BACKOFF_MAX),
            &[("python", &py)],
        ),
        ("DEFAULT_LEASE_MS", ms(q::DEFAULT_LEASE), &[("python", &py)]),
        (
            "DEFAULT_RETENTION_S",
            q::DEFAULT_RETENTION.as_secs(),
            &[("python", &py)],
        ),
        (
            "PRIORITY_MAX",
            (*q::PRIORITY_RANGE.end()).try_into().unwrap_or(0),
            &[("python", &py)],
        ),
        (
            "DEFAULT_MAX_PAYLOAD",
            q::DEFAULT_MAX_PAYLOAD as u64,
            &[("python", &py), ("node", &node)],
        ),
        (
            "PROTOCOL",
            q::PROTOCOL.into(),
            &[("python", &py), ("node", &node)],
        ),
    ];
    let mut wrong = Vec::new();
    for (name, rust, places) in want {
        for (lang, table) in places {
            match table.get(name) {
                Some(v) if *v == rust => {}
                other => wrong.push(format!("{lang} {name} = {other:?}, Rust says {rust}")),
            }
        }
    }
    // Ids: the Lua limit, and Python's own check.
    if lua.get("MAX_ID") != py.get("MAX_ID") {
        wrong.push(format!(
            "MAX_ID: lua {:?}, python {:?}",
            lua.get("MAX_ID"),
            py.get("MAX_ID")
        ));
    }
    if *q::PRIORITY_RANGE.start() != -*q::PRIORITY_RANGE.end() {
        wrong.push(
            "the priority range is no longer symmetric: PRIORITY_MAX in the clients assumes it"
                .into(),
        );
    }
    // The nine keys every script takes, in order.
    let keys = q::Keys::new("q").map_err(|e| e.to_string())?;
    let names: Vec<String> = keys
        .script_keys()
        .iter()
        .map(|k| k.rsplit(':').next().unwrap_or("").to_owned())
        .collect();
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let node_keys = format!("const SCRIPT_KEYS = [{}];", quoted.join(", "));
    if !node_text.contains(&node_keys) {
        wrong.push(format!("clients/node/src/index.ts lacks `{node_keys}`"));
    }
    let py_keys: String = quoted.iter().map(|q| format!("    {q},\n")).collect();
    if !py_text.contains(&format!("SCRIPT_KEYS = (\n{py_keys})")) {
        wrong.push(format!(
            "clients/python/src/spool_client/_core.py SCRIPT_KEYS is not {names:?}"
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("\n"))
    }
}
