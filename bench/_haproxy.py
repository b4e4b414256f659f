"""HAProxy as the second reference proxy: a config in a temp dir, the same weighted pair."""

from __future__ import annotations

import subprocess

from _proxy import ProxyProcess, find_binary

# One thread (like nginx's one worker and bgserve's one data-plane process), HTTP mode with
# keep-alive on both sides, weighted round robin, idle server connections reused.
CONFIG = """global
    nbthread 1
    maxconn 4096
    pidfile {tmp}/haproxy.pid

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s

frontend bench
    bind 127.0.0.1:{port}
    backlog 1024
    default_backend slots

backend slots
    balance roundrobin
{servers}
"""


def find_haproxy() -> str | None:
    """The haproxy binary on PATH or in /usr/sbin, or None."""
    return find_binary("haproxy")


class Haproxy(ProxyProcess):
    """HAProxy (one thread) in front of weighted upstreams, its own process in the foreground."""

    name = "haproxy"
    log_name = "haproxy.log"

    def config(self) -> str:
        servers = "\n".join(
            f"    server s{i} {host}:{port} weight {weight}"
            for i, (host, port, weight) in enumerate(self.upstreams)
            if weight > 0
        )
        return CONFIG.format(tmp=self.tmp, servers=servers, port=self.port)

    def start(self) -> subprocess.Popen[bytes]:
        config = self.tmp / "haproxy.cfg"
        config.write_text(self.config())
        with (self.tmp / self.log_name).open("wb") as log:
            # -db: stay in the foreground, so the process is ours to stop (never the service).
            return subprocess.Popen(
                [self.binary, "-db", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
