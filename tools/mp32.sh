#!/bin/sh
# Builds the 32-bit (i386) MicroPython unix port the firmware tests run beside the 64-bit one,
# into build/mp32/micropython, once: again only when the source tarball's hash changes
# (build/mp32/source.sha256 holds the hash the binary was built from).
# The source: the tarball named by PRECAST_MP32_SRC (MicroPython's source, or the unix-port
# subset), else ../shared/micropython/micropython-1.28.0-unix-subset.tgz beside this clone.
# Without either, says so and exits 0: the 32-bit runs then skip, naming how to enable them
# (and with CI=true the skip is a failure). Needs gcc-multilib (tools/sysdeps.sh installs it).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/build/mp32"
src=${PRECAST_MP32_SRC:-$root/../shared/micropython/micropython-1.28.0-unix-subset.tgz}
if [ ! -f "$src" ]; then
    echo "mp32: no MicroPython source at $src (set PRECAST_MP32_SRC=<tarball>):" \
        "the 32-bit firmware runs will skip" >&2
    exit 0
fi
hash=$(sha256sum "$src" | cut -d' ' -f1)
if [ -x "$out/micropython" ] && [ "$(cat "$out/source.sha256" 2>/dev/null)" = "$hash" ]; then
    exit 0
fi
echo "mp32: building the 32-bit unix port from $src (about 40 s)" >&2
mkdir -p "$out"
rm -f "$out/source.sha256"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar xzf "$src" -C "$work"
# the subset unpacks at the top; a release tarball unpacks into micropython-X.Y.Z/
unix=$(find "$work" -maxdepth 3 -type d -path '*/ports/unix' | head -1)
[ -n "$unix" ] || { echo "mp32: no ports/unix in $src" >&2; exit 1; }
# the flags ../shared/micropython/build-unix32.sh uses: viper (x86 emitter), cryptolib
# (axTLS), socket, heap_lock and 31-bit small ints, as on an ESP32 or an RP2040
make -C "$unix" -j"$(nproc)" VARIANT=standard MICROPY_FORCE_32BIT=1 \
    MICROPY_PY_FFI=0 MICROPY_PY_BTREE=0 MICROPY_SSL_AXTLS=1 MICROPY_SSL_MBEDTLS=0 \
    FROZEN_MANIFEST= >"$out/build.log" 2>&1 || {
    tail -30 "$out/build.log" >&2
    echo "mp32: the build failed (full log: $out/build.log); gcc-multilib installed?" >&2
    exit 1
}
cp "$unix/build-standard/micropython" "$out/micropython.new"
"$out/micropython.new" -c "import sys; assert sys.maxsize == 2**31 - 1"
mv "$out/micropython.new" "$out/micropython"
echo "$hash" >"$out/source.sha256"
echo "mp32: $out/micropython" >&2
