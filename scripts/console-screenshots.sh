#!/usr/bin/env bash
# Regenerates the screenshots in docs/console.md: runs the headless-Chromium
# test of the dashboard (clients/python/tests/test_console_browser.py), which
# saves them under target/console-screenshots/, and copies them to docs/img/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-clients.sh >/dev/null
for f in overview job dead workers; do
  cp "target/console-screenshots/$f.png" "docs/img/console-$f.png"
done
echo "console-screenshots: docs/img/console-*.png updated"
