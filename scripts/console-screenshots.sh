#!/usr/bin/env bash
# Regenerates the screenshots in docs/console.md: runs the headless-Chromium
# test of the dashboard (bins/console/tests/browser.rs), which saves them
# under $SPOOL_SCREENSHOTS, and copies them to docs/img/console-*.png.
set -euo pipefail
cd "$(dirname "$0")/.."
shots="target/console-screenshots-rs"
rm -rf "$shots"
SPOOL_SCREENSHOTS="$PWD/$shots" SPOOL_REQUIRE_ALL_TESTS=1 \
  cargo nextest run --locked -p spool-console --test browser >/dev/null
for f in overview job dead workers phone dark; do
  cp "$shots/$f.png" "docs/img/console-$f.png"
done
echo "console-screenshots: docs/img/console-*.png updated"
