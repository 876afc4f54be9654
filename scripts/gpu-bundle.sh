#!/usr/bin/env bash
# Packs what scripts/gpu-smoke-bundled.sh needs into .gpu/bundle.tar.xz, for
# a GPU machine that has the NVIDIA driver but no Rust, FFmpeg or Redis and
# cannot install any (the workplace's lent device machines): the worker,
# spoolctl and the encoder's test and bench binaries (debug, stripped), the
# ffmpeg/ffprobe CLIs, redis-server, and every shared library they load
# except glibc's own and the driver's (libcuda, libnvcuvid, libnvidia-ml come
# from the GPU machine). Run it here, then on the GPU machine:
#   tar -xJf .gpu/bundle.tar.xz -C /tmp && /tmp/gpu/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
out=.gpu/gpu
rm -rf .gpu && mkdir -p "$out/bin" "$out/lib"
grep -qxF '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude

cargo build -q -p spool-encoder-worker -p spoolctl
# Test binaries by target name, from cargo's own report of what it built.
cargo test -q -p spool-encoder --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        kind = "lib" if m["target"]["kind"] == ["lib"] else m["target"]["name"]
        print(kind, m["executable"])
' > .gpu/tests.txt
cargo build -q -p spool-benches --bench encode --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print("bench-encode", m["executable"])
' >> .gpu/tests.txt
# What the GPU checks run: the lib's filter-chain and device tests, the
# encode tests' GPU branch, and the encode bench.
while read -r name path; do
  case "$name" in lib|encode|bench-encode) cp "$path" "$out/bin/test-$name" ;; esac
done < .gpu/tests.txt
cp target/debug/spool-encoder-worker target/debug/spoolctl "$out/bin/"
cp "$(command -v ffmpeg)" "$(command -v ffprobe)" "$(command -v redis-server)" "$(command -v redis-cli)" "$out/bin/"
strip "$out"/bin/* 2>/dev/null || true
# Every library they load but glibc's and the driver's; the ones no check
# uses become stubs (scripts/gpu/stub-libs.py), which keeps the bundle small.
python3 scripts/gpu/stub-libs.py "$out/lib" "$out"/bin/*
strip --strip-unneeded "$out"/lib/* 2>/dev/null || true
cp scripts/gpu-smoke-bundled.sh "$out/run.sh"
# The bundle must work here before it travels: every binary loads, FFmpeg
# encodes, and the chain checks pass on the stubbed libraries alone.
check() {
  set -e
  export LD_LIBRARY_PATH="$PWD/$out/lib" PATH="$PWD/$out/bin:$PATH"
  local tmp bin="$PWD/$out/bin"
  tmp=$(mktemp -d)
  ffmpeg -v error -f lavfi -i testsrc2=size=320x240:duration=1 -c:v libx264 "$tmp/a.mp4"
  ffprobe -v error -show_entries stream=codec_name -of csv=p=0 "$tmp/a.mp4" | grep -qx h264
  spool-encoder-worker --help >/dev/null
  spoolctl --version >/dev/null
  redis-server --version >/dev/null
  cd "$tmp"
  "$bin/test-lib" every_filter_chain --test-threads 1 >/dev/null
  "$bin/test-encode" gpu_decode --test-threads 1 >/dev/null
  "$bin/test-encode" auto --test-threads 1 >/dev/null
  cd - >/dev/null
  rm -rf "$tmp"
}
# In a subshell of its own (set -e holds there; `check || …` would lift it).
if ! (check); then
  echo "gpu-bundle: the bundle does not work here; not packed"
  exit 1
fi
tar -C .gpu -cf - gpu | xz -6 -T2 > .gpu/bundle.tar.xz
rm -rf "$out"
ls -la .gpu/bundle.tar.xz
