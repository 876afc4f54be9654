#!/usr/bin/env bash
# Quick start: installs what is missing, builds spool-encoder-worker and
# spoolctl, and runs the main job on embedded defaults: a throwaway local
# redis-server when none answers on 127.0.0.1:6379, a generated test clip
# (FFmpeg's lavfi sources), an encode enqueued with `spoolctl encode`, the
# worker running until it is done, then the output, the encoder used and the
# worker's key metrics. Ends by draining the worker with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
echo "building (release)…"
cargo build --release -q -p spool-encoder-worker -p spoolctl
bin=target/release

work=$(mktemp -d)
cleanup() {
  [ -n "${worker_pid:-}" ] && kill "$worker_pid" 2>/dev/null || true
  [ -n "${redis_pid:-}" ] && kill "$redis_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 20000))
    (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

port=6379
if ! redis-cli -p "$port" ping >/dev/null 2>&1; then
  port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --logfile "$work/redis.log" &
  redis_pid=$!
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
  echo "started a throwaway redis-server on 127.0.0.1:$port"
fi
export SPOOL_REDIS_URL="redis://127.0.0.1:$port"
export SPOOL_QUEUE="quickstart-$$"

mkdir -p "$work/in" "$work/out"
ffmpeg -v error -f lavfi -i testsrc2=size=1280x720:rate=30:duration=5 \
  -f lavfi -i sine=frequency=440:duration=5 \
  -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -shortest "$work/in/clip.mp4"
echo "generated $work/in/clip.mp4 (720p, 5 s, with audio)"

metrics_port=$(free_port)
SPOOL_INPUT_ROOT="$work/in" SPOOL_OUTPUT_ROOT="$work/out" \
  SPOOL_METRICS_ADDR="127.0.0.1:$metrics_port" RUST_LOG=warn \
  "$bin/spool-encoder-worker" &
worker_pid=$!

id=$("$bin/spoolctl" encode clip.mp4 --out clip_480p --height 480 --quality 26 --preset fast)
echo "enqueued encode job $id"
"$bin/spoolctl" watch "$id"
"$bin/spoolctl" inspect "$id" --json > "$work/job.json"
field() { grep -o "\"$1\":\"[^\"]*\"" "$work/job.json" | head -1 | cut -d'"' -f4; }
echo "output:  $(field path)"
echo "encoder: $(field encoder) ($(field backend_reason))"
# Where decoding, scaling and encoding ran, and why (docs/gpu.md).
python3 -c '
import json, sys
stages = (json.load(open(sys.argv[1])).get("result") or {}).get("stages") or {}
for k in ("decode", "scale", "encode"):
    v = stages.get(k) or {}
    print("  %s: %s (%s)" % (k, v.get("on"), v.get("why")))
' "$work/job.json"
echo "worker metrics:"
curl -fsS "http://127.0.0.1:$metrics_port/metrics" \
  | grep -E '^spool_(jobs_total|encode_frames_total|encode_fps|worker_capacity|job_duration_seconds_sum)' \
  | grep -v ' 0$' || true
kill -TERM "$worker_pid"
wait "$worker_pid" && echo "worker drained and exited 0"
worker_pid=
"$bin/spoolctl" stats --queue "$SPOOL_QUEUE"
