"""Settings grouped by topic, read from the flat BGSERVE_ variables (the public contract)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

import bgserve
from bgserve.compose.backends import slot_env
from bgserve.registry.session import bound_mlflow_http
from bgserve.settings import Settings


def test_flat_variables_land_in_their_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGSERVE_KUBE_NAMESPACE", "models")
    monkeypatch.setenv("BGSERVE_SELDON_REQUIREMENTS", '["gpu", "bgserve"]')
    monkeypatch.setenv("BGSERVE_COMPARE_JUDGE_MODEL", "judge-7b")
    monkeypatch.setenv("BGSERVE_LEADER_LEASE_NAME", "ours")
    monkeypatch.setenv("BGSERVE_SHADOW_MIN_PAIRS", "7")
    monkeypatch.setenv("BGSERVE_PROMOTE_STEPS", "[20, 100]")  # the older spelling
    settings = Settings()
    assert settings.kube.namespace == "models"
    assert settings.kube.seldon.requirements == ["gpu", "bgserve"]
    assert settings.compare.judge.model == "judge-7b"
    assert settings.leader.lease_name == "ours"
    assert settings.shadow.min_pairs == 7
    assert settings.plan.steps == [20, 100]
    assert settings.flat("kube_namespace") == "models"


def test_the_constructor_takes_flat_names_and_arguments_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BGSERVE_KUBE_NAMESPACE", "from-env")
    assert Settings(kube_namespace="given").kube.namespace == "given"
    assert Settings(kube={"namespace": "nested"}).kube.namespace == "nested"
    assert Settings(kube_context="c").kube.namespace == "from-env"


def test_every_group_field_has_a_variable_in_the_documented_list() -> None:
    names = Settings.env_names()
    assert {"BGSERVE_KUBE_NAMESPACE", "BGSERVE_KSERVE_ROUTER", "BGSERVE_PROMETHEUS_URL"} <= names
    assert {"BGSERVE_PLAN_STEPS", "BGSERVE_PROMOTE_STEPS", "BGSERVE_LEADER_ELECTION"} <= names
    assert "BGSERVE_KUBE" not in names and "BGSERVE_NAMESPACE" not in names


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"shadow_green_nice": 20}, "shadow_green_nice"),
        ({"kube_write_retries": 0}, "kube_write_retries"),
        ({"seldon_flavour": "v3"}, "seldon_flavour"),
        ({"plan_steps": [50, 10]}, "BGSERVE_PLAN_STEPS"),
        ({"plan_steps": [10, 90]}, "BGSERVE_PLAN_STEPS"),
        ({"plan_bake_s": 400}, "BGSERVE_PLAN_MAX_BAKE_S"),
        ({"plan_significance": 1.5}, "BGSERVE_PLAN_SIGNIFICANCE"),
    ],
)
def test_a_bad_value_is_refused_naming_its_flat_setting(
    given: dict[str, object], named: str
) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings(**given)  # type: ignore[arg-type]


def test_plan_steps_follow_the_domains_rule_a_first_step_of_zero_is_a_plan() -> None:
    assert Settings(plan_steps=[0, 100]).plan.steps == [0, 100]


def test_bounding_mlflow_http_leaves_the_environment_alone_and_reaches_slots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import environment_variables as mlflow_env

    for name in ("MAX_RETRIES", "TIMEOUT", "BACKOFF_FACTOR", "BACKOFF_JITTER"):
        variable = getattr(mlflow_env, f"MLFLOW_HTTP_REQUEST_{name}")
        monkeypatch.setattr(variable, "default", variable.default)  # restored afterwards
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "33")
    before = dict(os.environ)
    bounds = bound_mlflow_http(1, 4, 0)
    assert dict(os.environ) == before
    MLFLOW_HTTP_REQUEST_MAX_RETRIES = mlflow_env.MLFLOW_HTTP_REQUEST_MAX_RETRIES
    MLFLOW_HTTP_REQUEST_TIMEOUT = mlflow_env.MLFLOW_HTTP_REQUEST_TIMEOUT

    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 1
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 33  # the user's variable wins
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = slot_env(Settings(home=tmp_path, mlflow_tracking_uri=uri), bounds)
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "33"
    assert env["MLFLOW_TRACKING_URI"] == uri


def _environ_writes(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del):
            target: ast.expr | None = node.value
        elif isinstance(node, ast.Attribute) and node.attr in ("setdefault", "update", "pop"):
            target = node.value
        elif isinstance(node, ast.Attribute) and node.attr in ("putenv", "unsetenv"):
            lines.append(node.lineno)
            continue
        else:
            continue
        if isinstance(target, ast.Attribute) and target.attr == "environ":
            lines.append(node.lineno)
    return lines


def test_bgserve_never_writes_its_own_environment() -> None:
    writes = 'os.environ["A"] = "1"\nos.environ.setdefault("B", "2")\nos.putenv("C", "3")\n'
    reads = 'os.environ.get("A")\nx = os.environ["A"]\nenv = {**os.environ}\n'
    assert _environ_writes(ast.parse(writes)) == [1, 2, 3]
    assert _environ_writes(ast.parse(reads)) == []
    root = Path(bgserve.__file__).parent
    found = {
        str(path.relative_to(root)): lines
        for path in sorted(root.rglob("*.py"))
        if (lines := _environ_writes(ast.parse(path.read_text())))
    }
    assert found == {}


def test_a_copy_takes_flat_names_and_leaves_the_original_alone() -> None:
    original = Settings(kube_namespace="a", leader_identity="x")
    copy = original.model_copy(update={"kube_namespace": "b", "seldon_server": "s", "port": 9})
    assert (copy.kube.namespace, copy.kube.seldon.server, copy.port) == ("b", "s", 9)
    assert (copy.leader.identity, original.kube.namespace, original.kube.seldon.server) == (
        "x",
        "a",
        "",
    )
