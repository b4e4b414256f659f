"""A real ``mlflow server`` process (SQLite behind it) that delivers registry webhooks to
this machine's loopback, and the calls tests make on it over its REST API."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.processes import free_port, own_store_environment

WEBHOOK_ENV = {
    # MLflow refuses webhook URLs on private addresses and plain http unless told; tests
    # deliver to bgserve on loopback.
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    # MLflow caches which webhooks an event has for 60 s by default.
    "MLFLOW_WEBHOOK_CACHE_TTL": "1",
}


@contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """``mlflow server`` on a free loopback port with its store under ``root``; its URI
    once ``/health`` answers. The process group is killed when the block ends."""
    from cryptography.fernet import Fernet

    port = free_port()
    env = own_store_environment() | WEBHOOK_ENV
    # The key MLflow encrypts webhook secrets with: fixed for the server's whole life.
    env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"] = Fernet.generate_key().decode()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = (root / "mlflow-server.log").open("wb")
    proc = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(uri, proc)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        log.close()


def _wait_healthy(uri: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "mlflow server exited while starting"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError("mlflow server was not healthy within 120 s")


def move_alias(uri: str, name: str, alias: str, version: int) -> None:
    """Point ``alias`` of registered model or prompt ``name`` at ``version`` through the
    server's REST API, as the MLflow UI does."""
    response = httpx.post(
        f"{uri}/api/2.0/mlflow/registered-models/alias",
        json={"name": name, "alias": alias, "version": str(version)},
        timeout=30,
    )
    assert response.status_code == 200, response.text
