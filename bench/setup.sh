#!/usr/bin/env bash
# Install what the data-plane benchmarks compare against: nginx (with its Lua module) and
# HAProxy (Debian packages). Needs root (apt-get); does nothing when both are already there.
set -euo pipefail

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
# sse.py --peers nginx-lua: nginx's Lua module and LuaJIT's cjson
[ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || missing+=(libnginx-mod-http-lua)
[ -e /usr/lib/x86_64-linux-gnu/lua/5.1/cjson.so ] || missing+=(lua-cjson)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "bench/setup.sh: ${missing[*]} missing and installing needs root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
# Only the binaries are used: the Debian services are not wanted on a build machine.
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now nginx haproxy >/dev/null 2>&1 || true
fi
