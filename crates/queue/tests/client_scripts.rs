//! The producer libraries ship copies of this crate's Lua scripts
//! (`scripts/sync-client-scripts.sh` makes them); a copy that differs would
//! speak another protocol, so it fails here.

use std::path::Path;

#[test]
fn client_libraries_carry_the_crates_own_scripts() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let ours = root.join("crates/queue/src/scripts");
    let mut checked = 0;
    for dir in [
        "clients/python/src/spool_client/scripts",
        "clients/node/scripts",
    ] {
        let dir = root.join(dir);
        if !dir.is_dir() {
            continue;
        }
        for name in [
            "lib.lua",
            "enqueue.lua",
            "cancel.lua",
            "dead.lua",
            "pause.lua",
            "watch.lua",
        ] {
            let copy = std::fs::read_to_string(dir.join(name))
                .map_err(|e| format!("{}/{name}: {e}", dir.display()))?;
            let original =
                std::fs::read_to_string(ours.join(name)).map_err(|e| format!("{name}: {e}"))?;
            if copy != original {
                return Err(format!(
                    "{}/{name} differs from crates/queue/src/scripts/{name}: run scripts/sync-client-scripts.sh",
                    dir.display()
                ));
            }
            checked += 1;
        }
    }
    if checked == 0 {
        return Err("no client library found to check".into());
    }
    Ok(())
}
