#!/usr/bin/env bash
# Install the system packages SEF's demo and tests use, when they are missing and we may.
# Usage: scripts/system-deps.sh PACKAGE:COMMAND-OR-PATH ...   e.g. mosquitto:mosquitto
set -u
missing=()
for item in "$@"; do
  pkg=${item%%:*}; cmd=${item#*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ] && [ ! -e "$cmd" ]; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: please install: ${missing[*]} (needs root and apt-get)" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
# Debian starts a system-wide mosquitto on 1883 after install; SEF starts its own brokers.
for svc in mosquitto postgresql; do
  if printf '%s\n' "${missing[@]}" | grep -qx "$svc"; then
    (systemctl disable --now "$svc" || service "$svc" stop) >/dev/null 2>&1 || true
  fi
done
exit 0
