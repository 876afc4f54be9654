#!/usr/bin/env bash
# scripts/gpu-smoke.sh for a GPU machine without Rust, FFmpeg or Redis: runs
# the same checks from the bundle scripts/gpu-bundle.sh packs (unpacked next
# to this script as bin/ and lib/). Prints what ran where; writes the logs
# under $OUT when set. Each step goes on whatever the one before did.
set -u
D=$(cd "$(dirname "$0")" && pwd)
export PATH="$D/bin:$PATH"
drv=$(ldconfig -p 2>/dev/null | awk '/libcuda.so.1|libnvidia-ml.so.1/{print $NF}' | xargs -r -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="$D/lib:${drv}/usr/local/nvidia/lib64:/usr/local/nvidia/lib"
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
# The test binaries name their artefact folder by the path they were built
# at: point it at the checkout this runs from.
REPO=${REPO:-$PWD}
[ -e /work/main ] || { mkdir -p /work && ln -s "$REPO" /work/main; }
work=$(mktemp -d)
cd "$work"
t() { local bin=$1; shift; echo "-- $bin $*"; timeout 180 "$D/bin/test-$bin" "$@" --nocapture --test-threads 1 2>&1; echo "-- exit $?"; }

echo "== 0. driver libraries seen"
ldconfig -p | grep -E "libcuda\.so|libnvcuvid|libnvidia-ml|libnvidia-encode" || echo "none in ldconfig"
echo "== 1. driver, NVML, NVENC sessions"
nvidia-smi --query-gpu=index,name,driver_version,memory.total,encoder.stats.sessionCount --format=csv || true
spool-encoder-worker --gpu-report --nvenc-sessions 32 2>&1

echo "== 2. encoder options: not here (the bundle stubs x265, SVT-AV1 and aom; CI checks them)"

echo "== 3. an encode with hardware=auto (which backend ran, and why)"
t lib gpu | grep -E "^test |test result|GPU|Error" | head -30
t encode auto | grep -E "backend|fallback|^test |test result|Error" | head -20

echo "== 3b. a job through Redis: spool-encoder-worker with SPOOL_GPU_DECODE=on"
mkdir -p qs/in qs/out
ffmpeg -v error -f lavfi -i testsrc2=size=1280x720:rate=30:duration=5 -f lavfi -i sine=frequency=440:duration=5 \
  -c:v libx264 -pix_fmt yuv420p -c:a aac -shortest qs/in/clip.mp4
redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
export SPOOL_REDIS_URL=redis://127.0.0.1:6390 SPOOL_QUEUE=smoke SPOOL_INPUT_ROOT=$work/qs/in \
  SPOOL_OUTPUT_ROOT=$work/qs/out SPOOL_METRICS_ADDR=127.0.0.1:9470 SPOOL_GPU_DECODE=on SPOOL_LOG_FORMAT=text
spool-encoder-worker > "$OUT/worker.log" 2>&1 &
wpid=$!
id=$(spoolctl encode clip.mp4 --out clip_480p --height 480 --quality 26 --preset fast)
timeout 120 spoolctl watch "$id" >/dev/null 2>&1; echo "watch exit $?"
spoolctl inspect "$id" --json | tee "$OUT/job.json" | env -u LD_LIBRARY_PATH python3 -c '
import json, sys
j = json.load(sys.stdin); r = j.get("result") or {}
if isinstance(r, str): r = json.loads(r)
print("state:", j.get("state"), "error:", j.get("last_error"))
print("encoder:", r.get("encoder"), "|", r.get("fallback_reason") or r.get("why"))
for k, v in (r.get("stages") or {}).items(): print(f"{k}: {v}")
' 2>&1
kill -TERM $wpid; wait $wpid; echo "worker drained, exit $?"
redis-cli -p 6390 shutdown nosave >/dev/null 2>&1

echo "== 4. GPU-resident pipeline (NVDEC, scale_cuda, NVENC or copy-out)"
t lib every_filter_chain | grep -E "^test |test result"
t lib cuda_frames | grep -E "^test |test result"
t encode gpu_decode | grep -E "GPU machine|NVDEC|Stages|^test |test result|Error" | head -20

echo "== 5. encode benchmark (debug build of spool; FFmpeg's own code does the work)"
if [ "${SPOOL_SMOKE_BENCH:-1}" = 1 ]; then
  SPOOL_BENCH_SECONDS=${SPOOL_BENCH_SECONDS:-5} SPOOL_BENCH_ROUNDS=${SPOOL_BENCH_ROUNDS:-2} \
    timeout 240 "$D/bin/test-bench-encode" --bench 2>&1 | tail -40
fi
