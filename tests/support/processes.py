"""Process helpers for tests that start bgserve itself: free ports, child processes, and
waiting for them to be gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil


def own_store_environment(*drop: str) -> dict[str, str]:
    """This process's environment for a child that makes its own MLflow store: without the
    session's ``MLFLOW_*`` variables (``mlflow_store`` sets them, and MLflow an experiment
    id, for the whole session) and without ``drop``."""
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("MLFLOW_")}


def free_port() -> int:
    """A loopback port free right now (for a server started in another process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``; empty once it is gone."""
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def wait_gone(pids: list[int], deadline_s: float = 20.0) -> list[int]:
    """Wait until none of ``pids`` runs (zombies count as gone); return those still alive."""
    deadline = time.monotonic() + deadline_s
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [
            p
            for p in alive
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        time.sleep(0.1)
    return alive


def start_serve(
    home: Path,
    mlflow_uri: str,
    extra_env: dict[str, str] | None = None,
    ready: tuple[int, ...] = (200,),
) -> tuple[str, subprocess.Popen[bytes]]:
    """``bgserve serve`` as its own process (data plane on a free port); its control URL
    once ``/readyz`` answers one of ``ready``. Fails if it exits while starting."""
    port = free_port()
    env = {
        **os.environ,
        "BGSERVE_HOME": str(home),
        "BGSERVE_DATA_PORT": "0",
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "MLFLOW_REGISTRY_URI": mlflow_uri,
        **(extra_env or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bgserve", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "bgserve exited while starting"
        try:
            if httpx.get(f"{url}/readyz").status_code in ready:
                return url, proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("bgserve was not ready within 120 s")


@contextmanager
def serving(home: Path, mlflow_uri: str, extra_env: dict[str, str]) -> Iterator[str]:
    """:func:`start_serve` for a block: its control URL, stopped (SIGTERM, then SIGKILL
    after 20 s) when the block ends."""
    url, proc = start_serve(home, mlflow_uri, extra_env)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
