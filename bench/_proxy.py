"""What the reference proxies share: a temp dir, a config, a foreground process, a port."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import psutil
from _stack import free_port, wait_until


def find_binary(name: str) -> str | None:
    """``name`` on PATH or in /usr/sbin, or None."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


class ProxyProcess:
    """A proxy in front of weighted upstreams ``(host, port, weight)``, run in the foreground
    from a config written into its own temp dir; a context manager that waits until it
    listens and stops it (``stop_signal``, then SIGKILL after 10 s)."""

    name = "proxy"
    log_name = "proxy.log"
    stop_signal = signal.SIGTERM

    def __init__(self, binary: str, upstreams: Sequence[tuple[str, int, int]]) -> None:
        self.binary = binary
        self.upstreams = upstreams
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bgserve-{self.name}-"))
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        """The config text for :attr:`upstreams` and :attr:`port`."""
        raise NotImplementedError

    def start(self) -> subprocess.Popen[bytes]:
        """Write the config and start the process (its log in :attr:`log_name`)."""
        raise NotImplementedError

    def ready(self, process: psutil.Process) -> bool:
        """Whether the started process is ready to take connections once it listens."""
        return True

    def processes(self) -> list[psutil.Process]:
        """The proxy's processes (for CPU accounting)."""
        assert self._proc is not None
        main = psutil.Process(self._proc.pid)
        return [main, *main.children()]

    def __enter__(self) -> Self:
        self._proc = self.start()
        try:
            wait_until(self._listening, 10.0, f"{self.name} listening")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _listening(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            log = (self.tmp / self.log_name).read_text(errors="replace")
            raise RuntimeError(f"{self.name} exited with {self._proc.returncode}: {log}")
        if not self.ready(psutil.Process(self._proc.pid)):
            return False
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(self.stop_signal)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)
