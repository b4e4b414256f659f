"""What Databricks runs behind the stand-in's served entities: MLflow's own scoring server.

Databricks Model Serving serves an MLflow model version with MLflow's pyfunc scoring
server (``/invocations`` taking ``dataframe_split``, ``dataframe_records``, ``instances`` or
``inputs``, answering ``{"predictions": [...]}``). :class:`ModelHost` does the same for
every entity a config update deploys: it downloads ``models:/<entity_name>/<entity_version>``
from the MLflow registry the test process uses and starts ``uvicorn
mlflow.pyfunc.scoring_server.app:app`` on it (what ``mlflow models serve`` runs), a real
process on a loopback port; the entity is ready once ``/ping`` answers 200. Invocations the
stand-in routes to an entity are posted to its server; a removed entity's server stops.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
from typing import Any

import httpx

from tests.support.databricks import DatabricksStandIn
from tests.support.kube import _wait_ready


class ModelHost:
    """MLflow scoring servers for the stand-in's served entities (module docstring)."""

    def __init__(self, stand_in: DatabricksStandIn) -> None:
        self.running: dict[tuple[str, str], tuple[subprocess.Popen[bytes], str]] = {}
        self.invoked: list[tuple[str, str]] = []  # (endpoint, entity) of answered calls
        self.lock = threading.Lock()
        self.models = tempfile.TemporaryDirectory(prefix="databricks-models-")
        stand_in.on_entity = self.deploy
        stand_in.on_entity_removed = self.remove
        stand_in.on_invoke = self.invoke

    def deploy(self, endpoint: str, entity: dict[str, Any]) -> str | None:
        import mlflow

        uri = f"models:/{entity['entity_name']}/{entity['entity_version']}"
        try:
            path = mlflow.artifacts.download_artifacts(
                uri, dst_path=os.path.join(self.models.name, f"{endpoint}-{entity['name']}")
            )
        except mlflow.MlflowException as exc:
            return f"The model version {uri} could not be loaded: {exc.message}"
        proc, url = self._spawn(path)
        try:
            _wait_ready(proc, f"{url}/ping")
        except (RuntimeError, TimeoutError) as exc:
            proc.kill()
            return f"The model server did not start: {exc}"
        with self.lock:
            self.running[(endpoint, entity["name"])] = (proc, url)
        return None

    def _spawn(self, model_path: str) -> tuple[subprocess.Popen[bytes], str]:
        listener = socket.create_server(("127.0.0.1", 0))
        args = [sys.executable, "-m", "uvicorn", "--fd", str(listener.fileno())]
        args += ["--log-level", "warning", "mlflow.pyfunc.scoring_server.app:app"]
        env = {**os.environ, "__pyfunc_model_path__": model_path}
        try:
            proc = subprocess.Popen(
                args,
                pass_fds=(listener.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        finally:
            port = listener.getsockname()[1]
            listener.close()
        return proc, f"http://127.0.0.1:{port}"

    def remove(self, endpoint: str, entity: str) -> None:
        with self.lock:
            found = self.running.pop((endpoint, entity), None)
        if found is not None:
            found[0].terminate()
            found[0].wait(10)

    def invoke(self, endpoint: str, entity: str, body: bytes) -> tuple[int, bytes]:
        with self.lock:
            found = self.running.get((endpoint, entity))
        if found is None:
            return DatabricksStandIn.no_instance(endpoint, entity, body)
        answer = httpx.post(
            f"{found[1]}/invocations",
            content=body,
            headers={"content-type": "application/json"},
            timeout=60,
        )
        with self.lock:
            self.invoked.append((endpoint, entity))
        return answer.status_code, answer.content

    def entities(self) -> list[tuple[str, str]]:
        """The (endpoint, entity) pairs whose model server runs."""
        with self.lock:
            return sorted(self.running)

    def close(self) -> None:
        for endpoint, entity in self.entities():
            self.remove(endpoint, entity)
        self.models.cleanup()
