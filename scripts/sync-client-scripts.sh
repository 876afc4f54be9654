#!/usr/bin/env bash
# Copies the queue's Lua scripts (crates/queue/src/scripts, the one source of
# truth) into the producer libraries. Never edit the copies: a test
# (crates/queue/tests/client_scripts.rs) fails when they differ.
set -euo pipefail
cd "$(dirname "$0")/.."
for dest in clients/python/src/spool_client/scripts clients/node/scripts; do
  [ -d "$(dirname "$dest")" ] || continue
  mkdir -p "$dest"
  for f in lib.lua enqueue.lua cancel.lua dead.lua pause.lua watch.lua; do
    cp "crates/queue/src/scripts/$f" "$dest/$f"
  done
done
echo "sync-client-scripts: copied"
