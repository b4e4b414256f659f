#!/usr/bin/env bash
# Install the real servers the test suite starts on loopback (Debian packages):
#   nginx       the peer the data-plane benchmarks and their smoke tests measure against
#   haproxy     the second such peer, beside nginx
#   postgresql  the production store, tested beside SQLite
#   prometheus  the source of live traffic counts for the Kubernetes backends' analysis
#   chromium    the headless browser the dashboard's tests drive (with chromium-driver)
# Only the binaries are used; the Debian services are disabled. Needs root for apt-get;
# without root it says what is missing and exits 0 (those tests then skip outside CI and
# fail under CI=true).
set -euo pipefail

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "tools/test-servers.sh: missing ${missing[*]}; installing needs root (apt-get)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps apt from starting the packages' services on a build machine.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
