"""HAProxy as the second reference proxy: a config in a temp dir, the same weighted pair."""

from __future__ import annotations

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
    return shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")


class Haproxy:
    """HAProxy (one thread) in front of weighted upstreams, its own process in the foreground."""

    def __init__(self, binary: str, upstreams: Sequence[tuple[str, int, int]]) -> None:
        self.binary = binary
        self.upstreams = upstreams
        self.tmp = Path(tempfile.mkdtemp(prefix="bgserve-haproxy-"))
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        servers = "\n".join(
            f"    server s{i} {host}:{port} weight {weight}"
            for i, (host, port, weight) in enumerate(self.upstreams)
            if weight > 0
        )
        return CONFIG.format(tmp=self.tmp, servers=servers, port=self.port)

    def __enter__(self) -> Haproxy:
        config = self.tmp / "haproxy.cfg"
        config.write_text(self.config())
        with (self.tmp / "haproxy.log").open("wb") as log:
            # -db: stay in the foreground, so the process is ours to stop (never the service).
            self._proc = subprocess.Popen(
                [self.binary, "-db", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(self._listening, 10.0, "haproxy listening")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _listening(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            log = (self.tmp / "haproxy.log").read_text(errors="replace")
            raise RuntimeError(f"haproxy exited with {self._proc.returncode}: {log}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def processes(self) -> list[psutil.Process]:
        """The one haproxy process."""
        assert self._proc is not None
        return [psutil.Process(self._proc.pid)]

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)
