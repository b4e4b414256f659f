"""nginx as the reference reverse proxy: a config in a temp dir, the same weighted pair."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import psutil
from _stack import free_port, wait_until

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
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


class Nginx:
    """nginx (one worker, like bgserve's one router thread) in front of weighted slots."""

    def __init__(self, binary: str, upstreams: Sequence[tuple[str, int, int]]) -> None:
        self.binary = binary
        self.upstreams = upstreams
        self.tmp = Path(tempfile.mkdtemp(prefix="bgserve-nginx-"))
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        servers = "\n".join(
            f"        server {host}:{port} weight={weight};"
            for host, port, weight in self.upstreams
            if weight > 0
        )
        return CONFIG.format(tmp=self.tmp, servers=servers, port=self.port)

    def __enter__(self) -> Nginx:
        (self.tmp / "nginx.conf").write_text(self.config())
        args = [self.binary, "-p", str(self.tmp), "-c", str(self.tmp / "nginx.conf")]
        args += ["-e", str(self.tmp / "error.log")]
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        try:
            wait_until(self._listening, 10.0, "nginx listening")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _listening(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            log = (self.tmp / "error.log").read_text(errors="replace")
            raise RuntimeError(f"nginx exited with {self._proc.returncode}: {log}")
        if not psutil.Process(self._proc.pid).children():
            return False  # the worker is not forked yet
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def processes(self) -> list[psutil.Process]:
        """The master and its worker."""
        assert self._proc is not None
        master = psutil.Process(self._proc.pid)
        return [master, *master.children()]

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGQUIT)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)
