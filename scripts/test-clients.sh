#!/usr/bin/env bash
# The producer libraries' tests: lint, types and tests against real
# redis-server processes and the Rust workers. Creates its own virtualenv
# (target/py-clients) and node_modules (clients/node/node_modules) as needed.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
# (Two builds: with --example, cargo builds only the example, not the bins.)
cargo build -q -p spool-encoder-worker -p spoolctl -p spool-console
cargo build -q -p spool-worker --example sleep_worker
export SPOOL_BIN_DIR="$root/target/debug"

# Python
venv="$root/target/py-clients"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
stamp="$venv/.spool-installed"
if [ ! -f "$stamp" ] || [ clients/python/pyproject.toml -nt "$stamp" ]; then
  "$venv/bin/pip" install -q -e "clients/python[dev]"
  touch "$stamp"
fi
(
  cd clients/python
  "$venv/bin/ruff" check -q src tests ../../examples/fastapi
  "$venv/bin/ruff" format --check -q src tests ../../examples/fastapi
  "$venv/bin/mypy"
  "$venv/bin/pytest" -q tests
)

# Node (TypeScript)
if [ -d clients/node ]; then
  (
    cd clients/node
    [ -d node_modules ] && [ node_modules -nt package.json ] || npm install --no-audit --no-fund --silent
    npm run --silent build
  )
  # The Express example imports the built library (file: dependency).
  (
    cd examples/express
    [ -d node_modules ] && [ node_modules -nt package.json ] || npm install --no-audit --no-fund --silent
  )
  (cd clients/node && npm test --silent)
fi
echo "test-clients: all passed"
