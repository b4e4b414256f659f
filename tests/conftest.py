"""Shared fixtures: a real MLflow store (SQLite in a temp dir) per test session or test."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bgserve.dataplane.router import Router
from tests.support.crd_schema import Crd, load_crds, require_crd_dir
from tests.support.envoy_gateway import envoy_gateway  # noqa: F401  (a session fixture)
from tests.support.kube import SlotProcesses
from tests.support.kube_fake_apiserver import FakeApiServer
from tests.support.kube_namespace import kube_ns  # noqa: F401  (a namespace on it per test)
from tests.support.kube_real_apiserver import kube_cluster  # noqa: F401  (the session fixture)
from tests.support.postgres import PostgresServer, postgres_server


def _mlflow_env(root: Path) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_REGISTRY_URI": f"sqlite:///{root / 'mlflow.db'}",
    }


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow SQLite store shared by the session; yields its tracking URI.

    The MLflow env vars are set for this process and inherited by slot processes.
    """
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    env = _mlflow_env(root)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    mlflow.set_registry_uri(env["MLFLOW_REGISTRY_URI"])
    # Artifacts land next to the database, never in the working directory.
    mlflow.create_experiment("bgserve-tests", artifact_location=str(root / "artifacts"))
    mlflow.set_experiment("bgserve-tests")
    yield env["MLFLOW_TRACKING_URI"]
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> Iterator[TestClient]:
    """A running bgserve (control API in-process, slots as real processes) of its own for
    each test module, so no module sees another's deployments; the MLflow store is shared."""
    from bgserve.api.app import create_app
    from tests.support.flow import make_settings, register_demo

    register_demo(mlflow_store)
    settings = make_settings(tmp_path_factory.mktemp("bgserve"), mlflow_store)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture(scope="module")
def app_settings() -> dict[str, Any]:
    """Settings the module's :func:`app` changes from :func:`tests.support.flow.make_settings`'s;
    a module that needs others defines its own ``app_settings``."""
    return {}


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory, mlflow_store: str, app_settings: dict[str, Any]
) -> Iterator[TestClient]:
    """A running bgserve of the module's own with ``app_settings`` applied, the demo registered
    in the shared MLflow store and its three releases created (ids in ``app.app.state.ids``)."""
    from bgserve.api.app import create_app
    from tests.support.flow import create_releases, make_settings, register_demo

    register_demo(mlflow_store)
    settings = make_settings(tmp_path_factory.mktemp("app"), mlflow_store)
    with TestClient(
        create_app(settings.model_copy(update=app_settings)), base_url="http://127.0.0.1"
    ) as client:
        client.app.state.ids = create_releases(client)  # type: ignore[attr-defined]
        yield client


@pytest.fixture(scope="module")
def rel(client: TestClient) -> dict[str, int]:
    """Release ids of the demo releases v1, v2 and reworded (v1 model, v2 prompt)."""
    from tests.support.flow import create_releases

    return create_releases(client)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Echo model bundles v1, v2 and v3 on disk (read-only), by version: their path URIs."""
    from tests.support.models import build_bundle

    root = tmp_path_factory.mktemp("bundles")
    return {v: build_bundle(root, v) for v in ("v1", "v2", "v3")}


# The state store on PostgreSQL as well as SQLite.


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the module (fails under CI when missing, skips elsewhere)."""
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh state database URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    server: PostgresServer = request.getfixturevalue("pg")
    return server.new_database()


# Kubernetes backends: the official CRDs, loaded once, and a loopback API server per test.


@pytest.fixture(scope="session")
def crds() -> Mapping[str, Crd]:
    """The official CRDs from ``$BGSERVE_CRD_DIR`` or the ``tools/crds.py`` cache (fails under
    CI when missing, skips elsewhere with a reason saying how to provide them)."""
    return load_crds(require_crd_dir())


@pytest.fixture
def server(crds: Mapping[str, Crd]) -> Iterator[FakeApiServer]:
    """A test Kubernetes API server on loopback that validates against ``crds``."""
    with FakeApiServer(crds) as srv:
        yield srv


@pytest.fixture
def slots() -> Iterator[SlotProcesses]:
    """Real slot processes that play a platform's pods; all stopped after the test."""
    procs = SlotProcesses()
    yield procs
    procs.stop_all()


@pytest.fixture
def demo_router() -> Iterator[tuple[Router, str]]:
    """A data plane in this process on a free port, and deployment ``demo``'s infer URL."""
    router = Router()
    port = router.start("127.0.0.1", 0)
    try:
        yield router, f"http://127.0.0.1:{port}/v2/models/demo/infer"
    finally:
        router.stop()
