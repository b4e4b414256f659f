#!/usr/bin/env bash
# Install what the data-plane benchmarks compare against: nginx (Debian package).
# Needs root (apt-get); does nothing when nginx is already there.
set -euo pipefail

if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "bench/setup.sh: nginx is missing and installing it needs root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq nginx-light >/dev/null || apt-get install -y -qq nginx >/dev/null
# Only the binary is used: the Debian service is not wanted on a build machine.
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
fi
