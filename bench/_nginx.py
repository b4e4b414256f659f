"""nginx as the reference reverse proxy: a config in a temp dir, the same weighted pair."""

from __future__ import annotations

import signal
import subprocess

import psutil
from _proxy import ProxyProcess, find_binary

CONFIG = """daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream slots {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://slots;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def find_nginx() -> str | None:
    """The nginx binary on PATH or in /usr/sbin, or None."""
    return find_binary("nginx")


class Nginx(ProxyProcess):
    """nginx (one worker, like bgserve's one router thread) in front of weighted slots."""

    name = "nginx"
    log_name = "error.log"
    stop_signal = signal.SIGQUIT  # graceful: finish the requests under way

    def config(self) -> str:
        servers = "\n".join(
            f"        server {host}:{port} weight={weight};"
            for host, port, weight in self.upstreams
            if weight > 0
        )
        return CONFIG.format(tmp=self.tmp, servers=servers, port=self.port)

    def start(self) -> subprocess.Popen[bytes]:
        (self.tmp / "nginx.conf").write_text(self.config())
        args = [self.binary, "-p", str(self.tmp), "-c", str(self.tmp / "nginx.conf")]
        args += ["-e", str(self.tmp / self.log_name)]
        return subprocess.Popen(args, stdin=subprocess.DEVNULL)

    def ready(self, process: psutil.Process) -> bool:
        return bool(process.children())  # the worker is forked
