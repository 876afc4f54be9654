#!/usr/bin/env bash
# GPU smoke test: on any machine with an NVIDIA GPU (and on one without, where
# it says what it could not do), prints what ran where:
#   1. the driver's view (nvidia-smi), NVML discovery and the NVENC session
#      probe (`spool-encoder-worker --gpu-report`);
#   2. the encoder-option checks against the linked FFmpeg (no GPU needed);
#   3. an encode with hardware=auto through the encoder's tests, reporting
#      the backend that ran (NVENC where it exists, else the CPU fallback
#      and its reason), then the same through spool-encoder-worker and Redis
#      (the quick start, with SPOOL_GPU_DECODE=on), with where each stage ran;
#   4. the GPU-resident pipeline (SPOOL_GPU_DECODE=on): NVDEC decode, a
#      ladder scaled with scale_cuda, NVENC from GPU memory (or libx264 from
#      the scaled frames copied out, on a GPU without NVENC), and a rotated
#      input that scales on the CPU: where each stage ran, and why;
#   5. the encode benchmark: spool in-process against the ffmpeg CLI doing
#      the same, on the CPU and, where the GPU allows, the CLI's GPU
#      pipeline (-hwaccel cuda -hwaccel_output_format cuda, scale_cuda).
# docs/gpu.md says what was verified on which hardware.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "== 1. driver, NVML, NVENC sessions"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=index,name,driver_version,memory.total,encoder.stats.sessionCount --format=csv || true
else
  echo "nvidia-smi: not installed (no NVIDIA driver on this machine)"
fi
cargo build -q -p spool-encoder-worker
target/debug/spool-encoder-worker --gpu-report --nvenc-sessions "${SPOOL_SMOKE_SESSIONS:-32}"

echo "== 2. encoder options against the linked FFmpeg"
cargo nextest run -p spool-encoder --test options --no-capture 2>&1 | grep -E "accepted|PASS|FAIL"

echo "== 3. an encode with hardware=auto (which backend ran, and why)"
cargo nextest run -p spool-encoder --lib gpu --no-capture 2>&1 | grep -E "PASS|FAIL"
cargo nextest run -p spool-encoder --test encode auto --no-capture 2>&1 \
  | grep -E "backend|fallback|PASS|FAIL" | head -20

echo "== 3b. the quick start on this machine: spool-encoder-worker, a job through Redis, hardware=auto and SPOOL_GPU_DECODE=on"
SPOOL_GPU_DECODE=on scripts/quickstart.sh 2>&1 | grep -E "encoder:|decode:|scale:|encode:|drained" || echo "quick start failed"

echo "== 4. GPU-resident pipeline (NVDEC, scale_cuda, NVENC): where each stage ran, and why"
cargo nextest run -p spool-encoder --lib every_filter_chain --no-capture 2>&1 | grep -E "PASS|FAIL"
cargo nextest run -p spool-encoder --test encode gpu_decode --no-capture 2>&1 \
  | grep -E "GPU machine|Stages|PASS|FAIL" | head -20

echo "== 5. encode benchmark (spool in-process vs the ffmpeg CLI)"
if [ "${SPOOL_SMOKE_BENCH:-1}" = 1 ]; then
  cargo bench -p spool-benches --bench encode 2>&1 | grep -vE "^\s*(Compiling|Finished|Running)"
else
  echo "skipped (SPOOL_SMOKE_BENCH=0)"
fi
