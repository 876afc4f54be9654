#!/usr/bin/env bash
# The producer libraries as a team would get them: builds the Python wheel
# and sdist and the npm tarball, installs each into a clean environment in a
# temporary directory outside the repository (from the registries, as a user
# would), and runs a smoke test there against a real redis-server and a real
# worker: enqueue, wait for the result, read the job back. The Node package
# is imported both as ESM (`import`) and as CommonJS (`require`).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
cargo build -q -p spool-worker --example sleep_worker
worker_bin="$root/target/debug/examples/sleep_worker"

tmp="$(mktemp -d /tmp/spool-packages.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server --port "$port" --bind 127.0.0.1 --save "" --dir "$tmp" >/dev/null &
pids+=($!)
url="redis://127.0.0.1:$port"
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
SPOOL_REDIS_URL="$url" SPOOL_QUEUE=smoke "$worker_bin" >"$tmp/worker.log" 2>&1 &
pids+=($!)

# Python: the wheel and the sdist, each in its own fresh virtualenv.
venv="$root/target/py-clients"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m build --version >/dev/null 2>&1 || "$venv/bin/pip" install -q build
"$venv/bin/python" -m build --sdist --wheel --outdir "$tmp/dist" clients/python >"$tmp/build.log" 2>&1 ||
  { cat "$tmp/build.log"; exit 1; }
cat >"$tmp/smoke.py" <<'PY'
import sys
from spool_client import JobState, Queue

q = Queue(sys.argv[1], "smoke")
job = q.wait(q.enqueue({"sleep_ms": 20}), timeout=60, raise_on_failure=True)
assert job.state is JobState.COMPLETED and job.result == {"slept_ms": 20}, job
print(f"python {sys.argv[2]}: ok ({job.id})")
PY
for kind in whl tar.gz; do
  env="$tmp/venv-$kind"
  python3 -m venv "$env"
  "$env/bin/pip" install -q "$tmp"/dist/*."$kind"
  (cd "$tmp" && "$env/bin/python" smoke.py "$url" "$kind")
done

# Node: `npm pack` (its prepack builds), installed into an empty project.
(cd clients/node && npm pack --silent --pack-destination "$tmp" >/dev/null)
mkdir "$tmp/app"
(
  cd "$tmp/app"
  npm init -y >/dev/null
  npm install --no-audit --no-fund --silent "$tmp"/spool-client-*.tgz
  cat >smoke.mjs <<'JS'
import { Queue } from "spool-client";
const q = new Queue(process.argv[2], "smoke");
const job = await q.wait(await q.enqueue({ sleep_ms: 20 }), { timeoutMs: 60_000, raiseOnFailure: true });
if (job.state !== "completed" || job.result?.slept_ms !== 20) throw new Error(JSON.stringify(job));
console.log(`node esm: ok (${job.id})`);
await q.close();
JS
  cat >smoke.cjs <<'JS'
const { Queue } = require("spool-client");
(async () => {
  const q = new Queue(process.argv[2], "smoke");
  const job = await q.wait(await q.enqueue({ sleep_ms: 20 }), { timeoutMs: 60_000, raiseOnFailure: true });
  if (job.state !== "completed" || job.result?.slept_ms !== 20) throw new Error(JSON.stringify(job));
  console.log(`node cjs: ok (${job.id})`);
  await q.close();
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
JS
  node smoke.mjs "$url"
  node smoke.cjs "$url"
)
echo "test-packages: all passed"
