#!/bin/sh
# Install the Debian packages that tests use, when they are missing and we are root.
# Every tool a test runs is here: as root, `make test` skips nothing for want of an install.
# Without root the tests that need them skip with a reason (tests/kit.py: need()).
set -eu
need=""
# want COMMAND PACKAGE: the package when the command is missing
want() {
    command -v "$1" >/dev/null 2>&1 || need="$need $2"
}
want ip iproute2
want tc iproute2
want tshark tshark
want socat socat
want tcpdump tcpdump
want setpriv util-linux
want systemd-analyze systemd
want psql postgresql
# The MQTT tests start their own broker (mosquitto lives in /usr/sbin, off a user's PATH).
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need="$need mosquitto"
want mosquitto_pub mosquitto-clients
want tmux tmux
# The 32-bit MicroPython unix port's build (tools/mp32.sh) needs a compiler for i386.
[ "$(uname -m)" != x86_64 ] || dpkg-query -W -f '${Status}' gcc-multilib 2>/dev/null \
    | grep -q "ok installed" || need="$need gcc-multilib"
# PostgreSQL's server binaries live off PATH (/usr/lib/postgresql/N/bin)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
    || need="$need postgresql"
[ -z "$need" ] && exit 0
# one package per name, in order
need=$(echo "$need" | tr ' ' '\n' | awk 'NF && !seen[$0]++' | tr '\n' ' ')
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "sysdeps: missing $need; not root or no apt-get, so the tests that need them will skip" >&2
    exit 0
fi
echo "sysdeps: installing $need" >&2
export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
apt-get update -qq >/dev/null
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $need >/dev/null
