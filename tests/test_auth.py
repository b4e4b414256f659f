"""Bearer tokens and roles: viewer reads, deployer changes, admin retires; principals in history."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from bgserve.api.app import create_app
from bgserve.settings import Settings
from tests.flow_helpers import RELEASES, make_settings, ok
from tests.test_schemathesis import _build

VIEWER, DEPLOYER, ADMIN = "view-7f3a", "deploy-91c2", "admin-e55d"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> Iterator[TestClient]:
    from tests.flow_helpers import register_demo

    register_demo(mlflow_store)
    home = Path(tmp_path_factory.mktemp("auth"))
    tokens = home / "tokens"
    digest = hashlib.sha256(ADMIN.encode()).hexdigest()
    tokens.write_text(f"# admins\nadmin:sha256:{digest}\n")
    settings = make_settings(home, mlflow_store)
    settings.auth_tokens = f"viewer:{VIEWER},deployer:{DEPLOYER}"
    settings.auth_tokens_file = tokens
    with TestClient(create_app(settings, build=_build)) as client:
        ids = []
        for key in ("v1", "reworded"):
            name, model, prompt = RELEASES[key]
            body = {"name": name, "model_uri": model, "prompt_uri": prompt}
            ids.append(ok(client.post("/releases", json=body, headers=bearer(DEPLOYER)), 201)["id"])
        client.app.state.ids = ids  # type: ignore[attr-defined]
        yield client


def test_callers_without_a_known_token_get_401(secured: TestClient) -> None:
    for headers in ({}, bearer("guess"), {"authorization": f"Basic {VIEWER}"}):
        response = secured.get("/deployments", headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert secured.get("/healthz").status_code == 200


def test_roles_are_ordered_and_history_names_the_principal(
    secured: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    blue, green = secured.app.state.ids  # type: ignore[attr-defined]
    create = {"name": "guarded", "release_id": blue}
    assert secured.post("/deployments", json=create, headers=bearer(VIEWER)).status_code == 403
    ok(secured.post("/deployments", json=create, headers=bearer(DEPLOYER)), 201)
    green_body = {"release_id": green}
    ok(secured.post("/deployments/guarded/green", json=green_body, headers=bearer(DEPLOYER)))
    promote = {"weight": 100, "force": True}
    refused = secured.post("/deployments/guarded/promote", json=promote, headers=bearer(VIEWER))
    assert refused.status_code == 403 and "deployer" in refused.json()["message"]
    ok(secured.post("/deployments/guarded/promote", json=promote, headers=bearer(DEPLOYER)))
    retire = secured.delete("/deployments/guarded/standby", headers=bearer(DEPLOYER))
    assert retire.status_code == 403 and "admin" in retire.json()["message"]
    retired = ok(secured.delete("/deployments/guarded/standby", headers=bearer(ADMIN)))
    assert retired["standby"] is None
    history = ok(secured.get("/deployments/guarded/history", headers=bearer(VIEWER)))
    roles = [e["principal"].split(":")[0] for e in history]
    assert roles == ["deployer"] * (len(history) - 1) + ["admin"]
    assert [history[0]["action"], history[-1]["action"]] == ["create", "retire"]
    digest = hashlib.sha256(DEPLOYER.encode()).hexdigest()[:8]
    assert history[0]["principal"] == f"deployer:{digest}"
    logged = caplog.text + repr(history)
    assert all(token not in logged for token in (VIEWER, DEPLOYER, ADMIN))


def test_non_loopback_bind_needs_tokens(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="without auth tokens"):
        Settings(home=tmp_path, host="0.0.0.0")
    assert Settings(home=tmp_path, host="0.0.0.0", auth_tokens="admin:x").host == "0.0.0.0"
    result = subprocess.run(
        [sys.executable, "-m", "bgserve", "serve", "--host", "0.0.0.0", "--port", "0"],
        env={"BGSERVE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "without auth tokens" in result.stdout + result.stderr
