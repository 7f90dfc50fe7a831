#!/bin/sh
# Install the Debian packages that tests use, when they are missing and we are root.
# Without root the tests that need them skip with a reason.
set -eu
need=""
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v tshark >/dev/null 2>&1 || need="$need tshark"
command -v socat >/dev/null 2>&1 || need="$need socat"
command -v tcpdump >/dev/null 2>&1 || need="$need tcpdump"
# The PostgreSQL tests start their own cluster with initdb/pg_ctl (no system service needed).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql"
command -v tmux >/dev/null 2>&1 || need="$need tmux"
# The MQTT tests start their own broker (mosquitto lives in /usr/sbin, off a user's PATH).
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need="$need mosquitto"
command -v mosquitto_sub >/dev/null 2>&1 || need="$need mosquitto-clients"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "sysdeps: missing$need; not root or no apt-get, so the tests that need them will skip" >&2
    exit 0
fi
echo "sysdeps: installing$need" >&2
export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
apt-get update -qq >/dev/null
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $need >/dev/null
