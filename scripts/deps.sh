#!/usr/bin/env bash
# Install everything celeryc needs to build, test and benchmark on a fresh Debian 12 (as root).
# Skips packages already installed; never leaves system RabbitMQ/Redis running (the tests
# start their own on free loopback ports, see scripts/services.sh).
#
#   scripts/deps.sh            install missing packages (apt-get update only if needed)
#   scripts/deps.sh --check    list missing packages, exit 1 if any
set -euo pipefail

PKGS=(
    build-essential cmake pkg-config git
    librabbitmq-dev libhiredis-dev libjansson-dev libcmocka-dev zlib1g-dev
    rabbitmq-server redis-server redis-tools
    python3 python3-celery python3-kombu python3-redis python3-pytest
    postgresql libpq-dev python3-sqlalchemy python3-psycopg2
    clang clang-format procps openssl util-linux
)

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "${1:-}" = "--check" ]; then
    if [ ${#missing[@]} -gt 0 ]; then
        echo "missing: ${missing[*]}"
        exit 1
    fi
    echo "all dependencies installed"
    exit 0
fi

if [ ${#missing[@]} -eq 0 ]; then
    echo "[deps] all ${#PKGS[@]} packages already installed"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -E "$0" "$@"
    fi
    echo "[deps] missing packages: ${missing[*]}; run as root to install them" >&2
    exit 1
fi

echo "[deps] installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Keep apt from starting rabbitmq-server/redis-server as system services (invoke-rc.d
# consults policy-rc.d; 101 = action forbidden). Restored afterwards.
policy=/usr/sbin/policy-rc.d
had_policy=0
[ -e "$policy" ] && had_policy=1
if [ $had_policy = 0 ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi

apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"

# If a service got started anyway (systemd hosts ignore policy-rc.d), stop and disable it:
# a system RabbitMQ on 5672 is harmless to the tests but wastes memory and CPU.
for svc in rabbitmq-server redis-server postgresql; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
        systemctl disable "$svc" >/dev/null 2>&1 || true
    fi
done
echo "[deps] done"
