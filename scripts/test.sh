#!/usr/bin/env bash
# The test command: every crate's unit and integration tests, against real
# redis-server processes that the tests start themselves. Uses cargo-nextest
# when installed (parallel, per-test timeouts), else cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast "$@"
fi
# The Python and Node producer libraries, against real Redis and the Rust workers.
scripts/test-clients.sh
# The packages as built, installed outside the repository, against a real worker.
scripts/test-packages.sh
