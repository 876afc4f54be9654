#!/usr/bin/env bash
# Quick start: installs what is missing, builds the reference worker, and runs
# a queue end to end on embedded defaults: a throwaway local redis-server when
# none answers on 127.0.0.1:6379, jobs enqueued with plain redis-cli through the
# documented enqueue script (docs/protocol.md), a worker that runs them, and the
# worker's key metrics. Until the encoder worker lands, the jobs are the
# reference `sleep_worker`'s (sleep, fail, retry).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q -p spool-worker --example sleep_worker

work=$(mktemp -d)
cleanup() {
  [ -n "${worker_pid:-}" ] && kill "$worker_pid" 2>/dev/null || true
  [ -n "${redis_pid:-}" ] && kill "$redis_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=6379
if ! redis-cli -p "$port" ping >/dev/null 2>&1; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --logfile "$work/redis.log" &
  redis_pid=$!
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
  echo "started a throwaway redis-server on 127.0.0.1:$port"
fi

queue="quickstart-$$"
p="spool:{$queue}:"
cat crates/queue/src/scripts/lib.lua crates/queue/src/scripts/enqueue.lua > "$work/enqueue.lua"
jobs=12
for i in $(seq 1 $jobs); do
  fail=$(( i % 4 == 0 ? 1 : 0 ))
  redis-cli -p "$port" --eval "$work/enqueue.lua" \
    "${p}ready" "${p}scheduled" "${p}active" "${p}outstanding" "${p}dead" \
    "${p}completed" "${p}cancelled" "${p}seq" "${p}wake" , \
    "$p" "$queue" 1 "job-$i" "{\"sleep_ms\": 300, \"fail_times\": $fail}" 0 0 5 100 1000 30000 3600 "" >/dev/null
done
redis-cli -p "$port" sadd spool:queues "$queue" >/dev/null
echo "enqueued $jobs jobs on queue $queue (every fourth fails once, then retries)"

metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SPOOL_REDIS_URL="redis://127.0.0.1:$port" SPOOL_QUEUE="$queue" SPOOL_CONCURRENCY=4 \
  SPOOL_METRICS_ADDR="127.0.0.1:$metrics_port" SPOOL_SWEEP_INTERVAL=500ms RUST_LOG=warn \
  target/release/examples/sleep_worker &
worker_pid=$!

for _ in $(seq 1 300); do
  done_count=$(redis-cli -p "$port" zcard "${p}completed")
  [ "$done_count" -ge "$jobs" ] && break
  sleep 0.1
done
sleep 0.6
echo "completed: $(redis-cli -p "$port" zcard "${p}completed") of $jobs; outstanding: $(redis-cli -p "$port" scard "${p}outstanding")"
echo "job-4: state=$(redis-cli -p "$port" hget "${p}job:job-4" state) attempts=$(redis-cli -p "$port" hget "${p}job:job-4" attempts) result=$(redis-cli -p "$port" hget "${p}job:job-4" result)"
echo "worker metrics:"
curl -fsS "http://127.0.0.1:$metrics_port/metrics" | grep -E '^spool_(jobs_total|worker_capacity|queue_depth)' | grep -v ' 0$' || true
kill -TERM "$worker_pid"
wait "$worker_pid" && echo "worker drained and exited 0"
worker_pid=
redis-cli -p "$port" del "${p}ready" "${p}scheduled" "${p}active" "${p}outstanding" "${p}dead" "${p}completed" "${p}cancelled" "${p}seq" "${p}wake" >/dev/null
redis-cli -p "$port" srem spool:queues "$queue" >/dev/null
