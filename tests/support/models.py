"""Real MLflow pyfunc bundles and slot processes for the backend tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bgserve.domain.release import Release
from tests.support.processes import free_port

MODEL_CODE = '''
import time

import mlflow
from mlflow.pyfunc import PythonModel


class EchoBundle(PythonModel):
    """Answers f"{version}:{text.upper()}"; the text "slow:<seconds>" sleeps first, the
    text "fail:<message>" raises ValueError(message)."""

    def load_context(self, context):
        self.version = (context.model_config or {}).get("version", "v0")

    def predict(self, context, model_input, params=None):
        out = []
        for text in model_input["text"]:
            if text.startswith("slow:"):
                time.sleep(float(text.split(":", 1)[1]))
            if text.startswith("fail:"):
                raise ValueError(text.split(":", 1)[1])
            out.append(f"{self.version}:{text.upper()}")
        return out


mlflow.models.set_model(EchoBundle())
'''


def build_bundle(root: Path, version: str) -> str:
    """Save an echo bundle tagged ``version`` under ``root``; return its local path URI."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    root.mkdir(parents=True, exist_ok=True)
    code = root / "echo_model.py"
    code.write_text(MODEL_CODE)
    path = root / f"bundle-{version}"
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "text")]), outputs=Schema([ColSpec("string")])
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no type hints, no input example
        mlflow.pyfunc.save_model(
            str(path),
            python_model=str(code),
            model_config={"version": version},
            signature=signature,
            pip_requirements=["mlflow"],
        )
    return str(path)


def wait_until(predicate: object, timeout: float, what: str) -> None:
    """Poll ``predicate`` until true or fail after ``timeout`` seconds."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    delay = 0.02
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


class SlotProcess:
    """A slot server started directly (no backend), for slot and router tests."""

    def __init__(self, model_uri: str, deployment: str, release_id: int, log: Path) -> None:
        self.port = free_port()
        self.deployment = deployment
        self.release_id = release_id
        self._log = log.open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bgserve.slot.server",
                "--model-uri",
                model_uri,
                "--deployment",
                deployment,
                "--release-id",
                str(release_id),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
        self.log_path = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"slot exited: {self.log_path.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 90) -> float:
        """Wait for readiness; return seconds from process start to ready."""
        wait_until(self.ready, timeout, f"slot {self.deployment}/{self.release_id}")
        return time.monotonic() - self.started

    def __enter__(self) -> SlotProcess:
        """The slot once ready; stopped when the block ends."""
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def infer_body(*texts: str, name: str = "text") -> dict[str, object]:
    return {
        "inputs": [{"name": name, "datatype": "BYTES", "shape": [len(texts)], "data": list(texts)}]
    }


def local_release(release_id: int, bundle_path: str) -> Release:
    """A release whose bundle is a local model directory instead of a registry URI."""
    return _LocalRelease(
        id=release_id,
        name=f"r{release_id}",
        model_name="m",
        model_version=1,
        prompt_name="p",
        prompt_version=1,
        bundle_name="b",
        bundle_version=release_id,
        created_at=datetime.now(UTC),
        local_uri=bundle_path,
    )


@dataclass(frozen=True)
class _LocalRelease(Release):
    local_uri: str = ""

    @property
    def bundle_uri(self) -> str:
        return self.local_uri


def pid_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie nobody reaped counts as gone)."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
