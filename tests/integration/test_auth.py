"""Bearer tokens and roles: viewer reads, deployer changes, admin retires; principals in history."""

from __future__ import annotations

import hashlib
import importlib
import logging
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

import bgserve.api.routes
from bgserve.api.app import create_app
from bgserve.api.guard import GuardedRoute, declared_role
from bgserve.errors import InvalidInput
from bgserve.settings import Settings
from tests.support.flow import RELEASES, make_settings, ok
from tests.support.inprocess_api import build_in_process

pytestmark = pytest.mark.integration

VIEWER, DEPLOYER, ADMIN = "view-7f3a", "deploy-91c2", "admin-e55d"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> Iterator[TestClient]:
    from tests.support.flow import register_demo

    register_demo(mlflow_store)
    home = Path(tmp_path_factory.mktemp("auth"))
    tokens = home / "tokens"
    digest = hashlib.sha256(ADMIN.encode()).hexdigest()
    tokens.write_text(f"# admins\nadmin:sha256:{digest}\n")
    settings = make_settings(home, mlflow_store)
    settings.auth_tokens = f"viewer:{VIEWER},deployer:{DEPLOYER}"
    settings.auth_tokens_file = tokens
    with TestClient(create_app(settings, build=build_in_process)) as client:
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


def serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``bgserve serve`` on a non-loopback address; expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "bgserve", "serve", "--host", "0.0.0.0", "--port", "0"],
        env={"BGSERVE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("tokens", [",", " ", " , ,", "\t"])
def test_configured_but_empty_tokens_refuse_to_start(tmp_path: Path, tokens: str) -> None:
    with pytest.raises(ValidationError, match="BGSERVE_AUTH_TOKENS is set but holds no token"):
        Settings(home=tmp_path, host="0.0.0.0", auth_tokens=tokens)
    with pytest.raises(ValidationError, match="BGSERVE_AUTH_TOKENS is set but holds no token"):
        Settings(home=tmp_path, auth_tokens=tokens)  # on loopback too: never silently open
    settings = Settings(home=tmp_path)
    settings.auth_tokens = tokens  # assigned after validation: the app still refuses
    with pytest.raises(InvalidInput, match="BGSERVE_AUTH_TOKENS") as caught:
        create_app(settings, build=build_in_process)
    assert caught.value.field == "auth_tokens"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "holds no token"),
        ("# admins\n\n   \n# deployers\n", "holds no token"),
        (None, "cannot read"),
        (b"admin:\xff\xfe", "cannot read"),
    ],
)
def test_a_tokens_file_without_tokens_or_unreadable_refuses_to_start(
    tmp_path: Path, content: str | bytes | None, problem: str
) -> None:
    tokens = tmp_path / "tokens"
    if isinstance(content, bytes):
        tokens.write_bytes(content)
    elif content is not None:
        tokens.write_text(content)
    settings = Settings(home=tmp_path, host="0.0.0.0", auth_tokens_file=tokens)
    with pytest.raises(InvalidInput, match=f"BGSERVE_AUTH_TOKENS_FILE: .*{problem}") as caught:
        create_app(settings, build=build_in_process)
    assert caught.value.field == "auth_tokens_file"


def test_bgserve_serve_refuses_empty_tokens_before_binding(tmp_path: Path) -> None:
    comments = tmp_path / "tokens"
    comments.write_text("# rotated out\n")
    empty_env = serve(tmp_path, BGSERVE_AUTH_TOKENS=",")
    empty_file = serve(tmp_path, BGSERVE_AUTH_TOKENS_FILE=str(comments))
    assert empty_env.returncode != 0 and empty_file.returncode != 0
    said_env, said_file = (" ".join(r.stderr.split()) for r in (empty_env, empty_file))
    assert "BGSERVE_AUTH_TOKENS is set but holds no token" in said_env
    assert f"BGSERVE_AUTH_TOKENS_FILE: {comments} holds no token" in said_file
    for result in (empty_env, empty_file):
        assert "Uvicorn running" not in result.stdout + result.stderr


def test_no_token_means_401_before_the_body_is_read(secured: TestClient) -> None:
    for raw in (b'{"weight": true}', b'{"weight": ', b"\xff", b"x" * 10):
        response = secured.post(
            "/deployments/guarded/promote",
            content=raw,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 401 and response.json()["error"] == "Unauthorized"
        refused = secured.post(
            "/deployments/guarded/promote",
            content=raw,
            headers={"content-type": "application/json", **bearer(VIEWER)},
        )
        assert refused.status_code == 403 and "deployer" in refused.json()["message"]
    assert secured.post("/releases", json={"name": 5}).status_code == 401


def test_metrics_and_docs_need_a_viewer_when_tokens_are_configured(secured: TestClient) -> None:
    for path in ("/metrics", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        refused = secured.get(path)
        assert refused.status_code == 401 and refused.json()["error"] == "Unauthorized", path
        assert secured.get(path, headers=bearer(VIEWER)).status_code == 200, path
    assert "bgserve_slot_weight" in secured.get("/metrics", headers=bearer(VIEWER)).text
    for path in ("/healthz", "/readyz"):
        assert secured.get(path).status_code == 200
    unknown = secured.get("/no-such-page")
    assert unknown.status_code == 401  # nothing is learned about the API without a token
    assert secured.get("/no-such-page", headers=bearer(VIEWER)).status_code == 404


def test_public_metrics_and_docs_opens_those_and_nothing_else(
    tmp_path: Path, mlflow_store: str
) -> None:
    settings = make_settings(tmp_path, mlflow_store)
    settings.auth_tokens = f"viewer:{VIEWER}"
    settings.public_metrics_and_docs = True
    with TestClient(create_app(settings, build=build_in_process)) as client:
        for path in ("/metrics", "/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        assert client.get("/deployments").status_code == 401
        assert client.get("/releases/1").status_code == 401


def test_every_route_declares_a_role_checked_before_the_body() -> None:
    package = bgserve.api.routes
    checked = 0
    for module_info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{module_info.name}")
        for route in module.router.routes:
            assert isinstance(route, GuardedRoute), (module_info.name, route)
            assert declared_role(route.dependant) is not None, (module_info.name, route.path)
            checked += 1
    assert checked >= 14  # every route of the contract
