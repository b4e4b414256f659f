"""Generated calls of every control API operation, checked against the OpenAPI schema.

:mod:`tests.integration.test_schemathesis` asks only for "never a 5xx". This module also
checks that each answer's status code, content type, headers and body are the ones the
schema declares, and it aims the generated calls at things that exist: with some
probability a deployment name, a release id or a paging cursor is replaced by a real one,
so the routes that landed with paging, plans (warm-up, analysis floors, ``compare_with``),
shadows and ``POST /models/llm`` are reached past their 404, and not only refused. Each
operation, and each new parameter, must have been exercised a minimum number of times.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import checks
from schemathesis.core.failures import FailureGroup

from bgserve.api.app import create_app
from bgserve.api.paging import cursor_after
from tests.support.flow import create_releases, deploy, make_settings, register_demo
from tests.support.inprocess_api import build_in_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# 40 examples of 21 operations: 840 calls, about 45 s on 2 shared cores.
EXAMPLES_PER_OPERATION = 40
LOCAL = "http://127.0.0.1"
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
# (method, path template, where, key): a parameter or body field that must reach the API.
PARAMETERS = [
    ("GET", "/deployments", "query", "limit"),
    ("GET", "/deployments", "query", "cursor"),
    ("GET", "/deployments/{name}/history", "query", "limit"),
    ("GET", "/deployments/{name}/history", "query", "cursor"),
    ("POST", "/deployments/{name}/promote", "plan", "warmup"),
    ("POST", "/deployments/{name}/promote", "plan", "analysis"),
    ("POST", "/deployments/{name}/promote", "plan", "compare_with"),
    ("PUT", "/deployments/{name}/shadow", "body", "percent"),
    ("POST", "/models/llm", "body", "openai_url"),
]
MIN_PER_OPERATION = 30
MIN_PER_PARAMETER = 3  # calls that carried the parameter and were answered past a 404


@dataclass
class Tally:
    """What the run sent and got: calls per operation, per parameter, statuses, failures."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    reached: Counter[tuple[str, str]] = field(default_factory=Counter)  # answered but not 404
    parameters: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, mlflow_store: str
) -> Iterator[tuple[Any, TestClient]]:
    register_demo(mlflow_store)
    app_settings = make_settings(Path(tmp_path_factory.mktemp("routes-fuzz")), mlflow_store)
    app_settings.plan.bake_s = 0
    app = create_app(app_settings, build=build_in_process)
    with TestClient(app, base_url=LOCAL) as client:
        ids = create_releases(client)
        deploy(client, "chat", ids["v1"], ids["reworded"])
        deploy(client, "other", ids["v2"])
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers={"host": "127.0.0.1"})
        yield schema, client


def real_values() -> dict[str, Any]:
    """Values that name things the API holds, swapped into generated calls."""
    return {
        "name": st.sampled_from(["chat", "other"]),
        "release_id": st.integers(1, 3),
        "cursor": st.sampled_from(
            [cursor_after("deployments", "chat"), cursor_after("history", 1)]
        ),
        "plan": plans(),
    }


def numbers() -> st.SearchStrategy[Any]:
    """Numbers for plan fields: in range, at the edges, out of range, of the wrong type."""
    return st.one_of(
        st.integers(-1, 100),
        st.sampled_from([0, 0.5, 1e-300, 2_592_000, 2_592_001, 1e308, 10**20, True, "1"]),
        st.floats(allow_nan=False, allow_infinity=False),
    )


def plans() -> st.SearchStrategy[dict[str, Any]]:
    """Plan bodies over the fields that landed with warm-up, analysis floors and baselines."""
    analysis_keys = [
        "initial_delay_s",
        "min_latency_delta_ms",
        "min_ttft_delta_ms",
        "min_tpot_delta_ms",
        "max_latency_p95_ratio",
        "min_requests",
    ]
    return st.fixed_dictionaries(
        {},
        optional={
            "steps": st.sampled_from([[10, 50, 100], [100], [50, 100], [], [100, 50], [0, 100]]),
            "bake_s": numbers(),
            "warmup": st.fixed_dictionaries(
                {}, optional={"requests": numbers(), "timeout_s": numbers()}
            ),
            "analysis": st.fixed_dictionaries({}, optional={k: numbers() for k in analysis_keys}),
            "compare_with": st.sampled_from(["blue", "baseline", "green", ""]),
        },
    )


def aimed(case: Any, draw_real: dict[str, Any], swap: dict[str, bool]) -> Any:
    """``case`` with a real name, id, cursor or plan where ``swap`` says so."""
    if swap["plan"] and case.path == "/deployments/{name}/promote":
        case.body = {"force": True, "plan": draw_real["plan"]}
    for key in ("name", "release_id"):
        if swap[key] and case.path_parameters and key in case.path_parameters:
            case.path_parameters[key] = draw_real[key]
    if swap["cursor"] and isinstance(case.query, dict) and "cursor" in case.query:
        case.query["cursor"] = draw_real["cursor"]
    if swap["release_id"] and isinstance(case.body, dict) and "release_id" in case.body:
        case.body["release_id"] = draw_real["release_id"]
    return case


def aimed_cases(operation: Any) -> st.SearchStrategy[Any]:
    reals = st.fixed_dictionaries(real_values())
    swaps = st.fixed_dictionaries(
        {k: st.integers(0, 3).map(bool) for k in ("name", "cursor", "release_id", "plan")}
    )
    return st.builds(aimed, operation.as_strategy(), reals, swaps)


def count_parameters(tally: Tally, case: Any) -> None:
    for method, path, where, key in PARAMETERS:
        if (case.method, case.path) != (method, path):
            continue
        body: dict[str, Any] = case.body if isinstance(case.body, dict) else {}
        plan = body["plan"] if isinstance(body.get("plan"), dict) else {}
        found: dict[str, Any] = {
            "query": case.query if isinstance(case.query, dict) else {},
            "body": body,
            "plan": plan,
        }[where]
        if key in found:
            tally.parameters[(method, path, where, key)] += 1


def run_operation(operation: Any, tally: Tally, client: TestClient) -> None:
    """EXAMPLES_PER_OPERATION generated calls, each checked against the schema."""

    @seed(20240611)
    @given(case=aimed_cases(operation))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def call(case: Any) -> None:
        response = case.call(base_url=LOCAL)
        key = (case.method, case.path)
        tally.calls[key] += 1
        tally.statuses[response.status_code] += 1
        if response.status_code != 404:
            tally.reached[key] += 1
            count_parameters(tally, case)
        try:
            case.validate_response(response, checks=CHECKS)
        except (AssertionError, FailureGroup) as exc:
            tally.failures.append(
                f"{case.method} {case.formatted_path} query={case.query} body={case.body!r:.300}"
                f" -> {response.status_code} {response.text[:300]}: {str(exc)[:600]}"
            )
        if key == ("POST", "/deployments/{name}/promote") and response.status_code < 300:
            # Back to staged, so the next generated plan is judged on its own fields.
            name = case.path_parameters["name"]
            reverted = revert_until_done(client, name)
            assert reverted.status_code == 200, reverted.text

    call()


def revert_until_done(client: TestClient, name: str) -> Any:
    """Revert ``name``, retrying a lost race as the 409's hint says: the rollout engine may
    be applying the plan's next step (bake 0) at the same moment."""
    for _ in range(20):
        reverted = client.post(f"/deployments/{name}/revert", json={})
        if reverted.status_code != 409 or reverted.json().get("hint") != "retry":
            return reverted
        time.sleep(0.05)
    return reverted


def test_every_operation_answers_as_its_schema_says(
    api: tuple[Any, TestClient], capsys: pytest.CaptureFixture[str]
) -> None:
    schema, client = api
    tally = Tally()
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        run_operation(operation, tally, client)
    with capsys.disabled():
        print(
            f"\nschemathesis (schema checks): {sum(tally.calls.values())} cases over "
            f"{len(tally.calls)} operations; statuses {sorted(tally.statuses.items())}; "
            f"{len(tally.failures)} failures"
        )
        for key, n in sorted(tally.calls.items()):
            print(f"  {n:3d} calls ({tally.reached[key]:3d} past a 404) {key[0]} {key[1]}")
        for parameter, n in sorted(tally.parameters.items()):
            print(f"  {n:3d} with {parameter}")
    assert not tally.failures, "\n".join(tally.failures[:20])
    assert len(tally.calls) == len(operations)
    assert all(n >= MIN_PER_OPERATION for n in tally.calls.values()), tally.calls
    # With the in-process backend nothing is compared or mirrored: those reads stay 404.
    unreached = {("GET", "/deployments/{name}/comparison"), ("GET", "/deployments/{name}/shadow")}
    assert all(tally.reached[key] > 0 for key in set(tally.calls) - unreached), tally.reached
    for parameter in PARAMETERS:
        assert tally.parameters[parameter] >= MIN_PER_PARAMETER, (parameter, tally.parameters)
