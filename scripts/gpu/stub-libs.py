#!/usr/bin/env python3
"""Gathers the shared libraries a set of binaries loads into one folder,
replacing those not on the keep list with stubs: libraries of the same
SONAME and symbol versions whose functions do nothing. The GPU smoke test
needs FFmpeg's codecs and hardware contexts, not its SVG, speech synthesis
or subtitle renderers, and a GPU machine that cannot install packages
receives only what fits in a small transfer.

Usage: stub-libs.py OUT_LIB_DIR BINARY...
A stubbed function that is ever called returns garbage: keep every library
the exercised code paths use (KEEP below), and check the bundle where it
was made (scripts/gpu-bundle.sh runs the checks against it first).
"""
import os
import re
import subprocess
import sys
import tempfile

# Real libraries, by SONAME prefix: FFmpeg's own, the codecs the checks
# encode and decode with, the hardware contexts, compression, TLS (Redis,
# FFmpeg's network init), C++ and compiler runtimes, and the libraries whose
# demuxers probe every input (libopenmpt, libgme: a stub there crashed
# avformat_open_input).
KEEP = re.compile(
    r"^lib(av[a-z]*|sw[a-z]*|postproc|x264|dav1d|vpx|va|va-drm|vdpau|OpenCL|drm|z|bz2|lzma|zstd|lz4|"
    r"stdc\+\+|gcc_s|atomic|gomp|soxr|mp3lame|opus|vorbis|vorbisenc|vorbisfile|ogg|speex|theoraenc|theoradec|"
    r"gsm|twolame|shine|snappy|gnutls|p11-kit|ffi|idn2|unistring|tasn1|nettle|hogweed|gmp|ssl|crypto|"
    r"systemd|cap|gcrypt|gpg-error|jemalloc|mfx|openjp2|webp|webpmux|xvidcore|numa|md|bsd|soxr|"
    r"openmpt|mpg123|gme)\.so"
)
# Never bundled: the C library's own, and the GPU driver's (the GPU machine has them).
SYSTEM = re.compile(
    r"^(libc|libm|libdl|libpthread|librt|libresolv|ld-linux-x86-64|libcuda|libnvcuvid|libnvidia-[a-z-]+)\.so"
)


def needed(path):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def resolve(soname):
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.strip().split(" => ")
        if len(parts) == 2 and parts[0].split(" ")[0] == soname and "x86-64" in parts[0]:
            return parts[1]
    return None


def stub(real, soname, out_dir):
    syms = subprocess.run(
        ["nm", "-D", "--defined-only", "--with-symbol-versions", "-S", real],
        capture_output=True, text=True,
    ).stdout
    funcs, data, versions = [], [], {}
    for line in syms.splitlines():
        f = line.split()
        if len(f) < 3:
            continue
        kind, name = f[-2], f[-1]
        size = int(f[1], 16) if len(f) == 4 else 1
        if "@@" in name:
            name, ver = name.split("@@")
        elif "@" in name:
            continue  # a non-default (old) version: nobody links to it now
        else:
            ver = None
        if (ver and name == ver) or name in ("_init", "_fini", "_edata", "_end", "__bss_start"):
            continue  # the version node's own symbol, or one the linker makes
        if kind in "TtWiI":
            funcs.append(name)
        elif kind in "DdBbRrVvGgSsu":
            data.append((name, max(size, 1)))
        else:
            continue
        if ver:
            versions.setdefault(ver, []).append(name)
    with tempfile.TemporaryDirectory() as tmp:
        c = os.path.join(tmp, "stub.c")
        with open(c, "w") as fh:
            for i, n in enumerate(funcs):
                fh.write(f'void f{i}(void) __asm__("{n}");\nvoid f{i}(void) {{}}\n')
            for i, (n, size) in enumerate(data):
                fh.write(f'char d{i}[{size}] __asm__("{n}");\nchar d{i}[{size}];\n')
        args = ["gcc", "-shared", "-fPIC", "-w", "-o", os.path.join(out_dir, soname), c,
                f"-Wl,-soname,{soname}"]
        if versions:
            vs = os.path.join(tmp, "versions")
            with open(vs, "w") as fh:
                for ver, names in versions.items():
                    fh.write(f"{ver} {{ global: " + " ".join(f'"{n}";' for n in names) + " };\n")
                # Symbols without a version stay global too.
            args.append(f"-Wl,--version-script={vs}")
        subprocess.run(args, check=True)


def main():
    out_dir, binaries = sys.argv[1], sys.argv[2:]
    os.makedirs(out_dir, exist_ok=True)
    seen, queue, stubbed = set(), [], []
    for b in binaries:
        queue.extend(needed(b))
    while queue:
        soname = queue.pop()
        if soname in seen or SYSTEM.match(soname):
            continue
        seen.add(soname)
        real = resolve(soname)
        if real is None:
            print(f"stub-libs: {soname} not found", file=sys.stderr)
            continue
        if KEEP.match(soname):
            subprocess.run(["cp", "-L", real, os.path.join(out_dir, soname)], check=True)
            queue.extend(needed(real))
        else:
            stub(real, soname, out_dir)
            stubbed.append(soname)
    print(f"stub-libs: {len(seen) - len(stubbed)} real, {len(stubbed)} stubbed: {' '.join(sorted(stubbed))}")


main()
