#!/usr/bin/env bash
# Checks the container image's runtime stage without Docker: every shared
# library the binaries load (ldd) is mapped to the Debian package that ships
# it (dpkg -S), and each such package must be installed by the Dockerfile's
# runtime stage (or be a dependency of one it installs, resolved with
# apt-cache on this Debian 12 machine, the image's release) or be part of
# debian:bookworm-slim itself (BASE below). Fails naming the library, its
# package and the fix. CI runs it (scripts/test.sh is not needed: it builds
# what it checks).
#
# The binaries are the debug builds: a release build links the same shared
# libraries (the same -l flags and the same -sys crates), and building
# release binaries here would add minutes to CI. `--release` checks release
# builds instead.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
[ "${1:-}" = "--release" ] && profile=release
bins=(spool-encoder-worker spoolctl spool-console)

# The packages of debian:bookworm-slim (`docker run --rm debian:bookworm-slim
# dpkg-query -W -f '${Package}\n'`; the image is debootstrap's minbase
# variant: Priority: required packages, apt, and what they depend on).
# Written down from the published image's package list: no Docker engine
# runs where this script runs. Update it with the image tag.
BASE="adduser apt base-files base-passwd bash bsdutils coreutils dash debconf
debian-archive-keyring debianutils diffutils dpkg findutils gcc-12-base gpgv grep
gzip hostname init-system-helpers libacl1 libapt-pkg6.0 libattr1 libaudit-common
libaudit1 libblkid1 libbz2-1.0 libc-bin libc6 libcap-ng0 libcap2 libcom-err2
libcrypt1 libdb5.3 libdebconfclient0 libgcc-s1 libgcrypt20 libgmp10 libgnutls30
libgpg-error0 libhogweed6 libidn2-0 liblz4-1 liblzma5 libmd0 libmount1
libnettle8 libp11-kit0 libpam-modules libpam-modules-bin libpam-runtime libpam0g
libpcre2-8-0 libseccomp2 libselinux1 libsemanage-common libsemanage2 libsepol2
libsmartcols1 libstdc++6 libsystemd0 libtasn1-6 libtinfo6 libudev1 libunistring2
libuuid1 libxxhash0 libzstd1 login mawk mount ncurses-base ncurses-bin passwd
perl-base sed sysvinit-utils tar tzdata usr-is-merged util-linux util-linux-extra
zlib1g"

dockerfile=deploy/docker/Dockerfile
# The runtime stage's `apt-get install` packages.
runtime_pkgs=$(awk '/^FROM .* AS runtime/{r=1} r' "$dockerfile" \
  | sed -n '/apt-get install/,/&&\|^[^ ]/p' | tr ' \\' '\n\n' \
  | grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -vE '^(apt-get|install|update|rm|and)$' | sort -u)
[ -n "$runtime_pkgs" ] || { echo "check-libs: found no packages in $dockerfile's runtime stage"; exit 1; }
# What installing them brings in (Depends and Pre-Depends, recursively).
closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances $runtime_pkgs 2>/dev/null \
  | grep -vE '^ |^<' | sed 's/:.*//' | sort -u)

cargo build -q $([ "$profile" = release ] && echo --release) \
  -p spool-encoder-worker -p spoolctl -p spool-console

fail=0
checked=0
declare -A seen=()
for b in "${bins[@]}"; do
  path="target/$profile/$b"
  while read -r lib; do
    [ -n "$lib" ] || continue
    [ -n "${seen[$lib]:-}" ] && continue
    seen[$lib]=1
    real=$(readlink -f "$lib")
    pkg=""
    for p in "$lib" "$real" "/usr$lib" "/usr$real" "${lib#/usr}" "${real#/usr}"; do
      pkg=$(dpkg -S "$p" 2>/dev/null | head -1 | cut -d: -f1) && [ -n "$pkg" ] && break
    done
    checked=$((checked + 1))
    if [ -z "$pkg" ]; then
      echo "check-libs: $b loads $lib, which no Debian package ships (built by hand?)"
      fail=1
    elif grep -qxF "$pkg" <<<"$(tr ' ' '\n' <<<"$BASE")"; then
      :
    elif grep -qxF "$pkg" <<<"$runtime_pkgs"$'\n'"$closure"; then
      :
    else
      echo "check-libs: $b loads $lib from package $pkg, which the runtime stage of $dockerfile does not install and debian:bookworm-slim lacks: add $pkg to its apt-get install"
      fail=1
    fi
  done < <(ldd "$path" | awk '$3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
done
if [ "$fail" -ne 0 ]; then
  exit 1
fi
echo "check-libs: $checked shared libraries of ${bins[*]} ($profile) all come from the runtime stage's packages or the base image"
