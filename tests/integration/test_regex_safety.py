"""Golden-set regexes run on RE2: linear time, a size limit, unsupported syntax refused at parse."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bgserve.api.app import create_app
from bgserve.errors import InvalidInput
from bgserve.evaluation.assertions import MAX_REGEX_LENGTH, Answer, check_assertion
from bgserve.evaluation.golden import parse_cases
from bgserve.evaluation.scorers import ExactScorer
from tests.support.flow import make_settings
from tests.support.inprocess_api import build_in_process

pytestmark = pytest.mark.integration

CATASTROPHIC = "^(a+)+$"  # exponential on a backtracking engine: 30 'a's took 71 s with `re`


def regex_case(pattern: str, case_id: str = "r1") -> dict[str, object]:
    return {"id": case_id, "inputs": {"text": "x"}, "assert": [{"type": "regex", "value": pattern}]}


def answer(output: str) -> Answer:
    return Answer(output=output, latency_ms=1.0, expected=None, scorer=ExactScorer())


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> Iterator[TestClient]:
    settings = make_settings(Path(tmp_path_factory.mktemp("regex")), mlflow_store)
    with TestClient(
        create_app(settings, build=build_in_process), base_url="http://127.0.0.1"
    ) as client:
        yield client


@pytest.mark.parametrize("count", [30, 100_000])
def test_a_catastrophic_pattern_runs_in_linear_time(count: int) -> None:
    (case,) = parse_cases([regex_case(CATASTROPHIC)])
    started = time.perf_counter()
    result = check_assertion(case.assertions[0], answer("a" * count + "b"))
    elapsed = time.perf_counter() - started
    assert not result.passed and "does not match" in result.message
    assert elapsed < 2.0  # generous: RE2 takes well under a millisecond here
    assert check_assertion(case.assertions[0], answer("a" * count)).passed


def test_regexes_keep_their_meaning_on_re2() -> None:
    (case,) = parse_cases([regex_case(r"(?i)^total: \d+(\.\d{2})?\s*EUR$")])
    check = case.assertions[0]
    assert check_assertion(check, answer("Total: 12.50 eur")).passed
    assert not check_assertion(check, answer("total: 12.5 EUR")).passed


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("foo(?=bar)", "invalid perl operator: (?="),
        ("(?<!x)foo", "invalid perl operator: (?<"),
        (r"(a)\1", r"invalid escape sequence: \1"),
        ("(?P<w>a)(?P=w)", "invalid"),
        ("a{1001}", "invalid repetition size"),
    ],
)
def test_unsupported_syntax_is_refused_when_the_set_is_parsed(pattern: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_cases([regex_case("ok"), regex_case(pattern, "look")])
    err = caught.value
    assert err.field == "cases[1].assert[0].value"
    assert err.message.startswith(
        f"golden set cases[1] (case 'look'): assert[0].value: regex {pattern!r} does not compile:"
    )
    assert reason in err.message and "no backreferences" in err.message


def test_patterns_over_the_size_limit_are_refused() -> None:
    parse_cases([regex_case("a" * MAX_REGEX_LENGTH)])
    with pytest.raises(InvalidInput) as caught:
        parse_cases([regex_case("a" * (MAX_REGEX_LENGTH + 1))])
    assert caught.value.field == "cases[0].assert[0].value"
    assert f"regex is 1,001 characters; the limit is {MAX_REGEX_LENGTH:,}" in caught.value.message


def test_the_api_answers_422_naming_the_case_and_field_before_any_slot_is_called(
    api: TestClient,
) -> None:
    body = {"cases": [regex_case("(?=a)a", "ahead")]}
    response = api.post("/deployments/no-such-deployment/compare", json=body)
    assert response.status_code == 422  # parsed first: the deployment is never looked up
    error = response.json()
    assert error["error"] == "InvalidInput" and error["field"] == "cases[0].assert[0].value"
    assert "(case 'ahead')" in error["message"] and "(?=" in error["message"]
