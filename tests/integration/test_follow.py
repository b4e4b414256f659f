"""Follow rules on a real ``mlflow server`` (SQLite behind it): an alias moved through the
server's REST API reaches bgserve as a signed webhook delivery (or by polling), and with
no other call the candidate is staged, compared, and its verdict written back as tags on
the prompt (or model) version and the comparison run.

One MLflow server and one ``bgserve serve`` (webhooks on, polling off) serve the module;
the polling test runs a bgserve of its own in this process, without webhooks.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
from fastapi.testclient import TestClient

from bgserve.api.app import create_app
from bgserve.app.follow_webhook import sign
from bgserve.demo.models import demo_templates
from tests.support.flow import make_settings, ok, register_demo
from tests.support.mlflow_server import mlflow_server, move_alias
from tests.support.processes import descendants, start_serve, wait_gone

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "follow-test-secret-0123456789"
PROMPT, MODEL = "summarize", "summarizer"
ALIAS_EVENTS: list[Any] = ["prompt_alias.created", "model_version_alias.created"]
SERVE_ENV = {
    "BGSERVE_FOLLOW_WEBHOOK_SECRET": SECRET,
    "BGSERVE_FOLLOW_POLL_SECONDS": "0",  # this bgserve learns of moves by webhook only
    "BGSERVE_ENGINE_INTERVAL_SECONDS": "0.05",
    # A loaded test machine: only a gross slowdown may fail a comparison here.
    "BGSERVE_COMPARE_THRESHOLDS": json.dumps(
        {"max_latency_ratio_p50": 10.0, "max_latency_ratio_p95": 10.0}
    ),
    "BGSERVE_PLAN_WARMUP_REQUESTS": "0",
}


@dataclass(frozen=True)
class Stack:
    """The module's MLflow server, its bgserve, and the release every deployment starts on."""

    mlflow: str
    client: Any  # mlflow.MlflowClient on the server
    http: httpx.Client  # bgserve's control API
    blue: int  # summarizer v1 + summarize v1


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call ``check`` every 20 ms until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.02)
    raise AssertionError(f"{what} not seen within {timeout} s")


def _register_demo(uri: str) -> None:
    saved = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        register_demo(uri)
    finally:
        mlflow.set_tracking_uri(saved[0])
        mlflow.set_registry_uri(saved[1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("follow")
    with mlflow_server(root) as uri:
        _register_demo(uri)
        url, proc = start_serve(root / "home", uri, SERVE_ENV)
        try:
            client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
            hook = f"{url}/follow/webhook"
            client.create_webhook("bgserve", hook, events=ALIAS_EVENTS, secret=SECRET)
            with httpx.Client(base_url=url, timeout=120) as http:
                body = {"name": "blue", "model_uri": f"models:/{MODEL}/1"}
                body["prompt_uri"] = f"prompts:/{PROMPT}/1"
                blue = ok(http.post("/releases", json=body), 201)["id"]
                yield Stack(uri, client, http, blue)
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    slots = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    assert wait_gone(slots) == []


def deploy(http: Any, name: str, release: int) -> None:
    ok(http.post("/deployments", json={"name": name, "release_id": release}), 201)


def rule_of(http: Any, name: str) -> dict[str, Any]:
    body: dict[str, Any] = ok(http.get(f"/deployments/{name}/follow"))
    return body


def settled(http: Any, name: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The rule once no trigger waits and ``check`` holds."""

    def look() -> dict[str, Any] | None:
        rule = rule_of(http, name)
        return rule if not rule["pending"] and rule["last_outcome"] and check(rule) else None

    found: dict[str, Any] = wait_for(look, 120, f"the follow rule of {name} settled")
    return found


def history(http: Any, name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = ok(http.get(f"/deployments/{name}/history"))
    return events


def prompt_tags(client: Any, version: int) -> dict[str, str]:
    return dict(client.get_prompt_version(PROMPT, str(version)).tags)


def new_prompt_version(client: Any, template: str) -> int:
    return int(client.register_prompt(PROMPT, template).version)


def follow(http: Any, name: str, **body: Any) -> dict[str, Any]:
    """Set the rule and wait for its first look (its aliases are not set yet)."""
    ok(http.put(f"/deployments/{name}/follow", json=body))
    return settled(http, name, lambda r: r["last_event"]["source"] == "rule")


@pytest.fixture(scope="module")
def moved(stack: Stack) -> float:
    """Deployment ``wh`` follows ``prompts:/summarize@candidate``; the alias is moved to
    version 2 through MLflow's REST API: the seconds until the verdict is on version 2."""
    deploy(stack.http, "wh", stack.blue)
    rule = follow(stack.http, "wh", prompt_alias="candidate")
    assert rule["follows"] == ["prompts:/summarize@candidate"]
    assert rule["golden_set"] == PROMPT and rule["last_outcome"]["action"] == "ignored"
    started, wall = time.monotonic(), datetime.now(UTC)
    move_alias(stack.mlflow, PROMPT, "candidate", 2)
    wait_for(lambda: prompt_tags(stack.client, 2).get("bgserve.verdict"), 120, "the verdict")
    seconds = time.monotonic() - started
    print(f"\nalias moved -> bgserve.verdict on prompts:/summarize/2: {seconds:.1f} s")
    since = lambda moment: (datetime.fromisoformat(moment) - wall).total_seconds()  # noqa: E731
    print(f"  +{since(rule_of(stack.http, 'wh')['last_event']['at']):5.1f} s delivery received")
    green = ok(stack.http.get("/deployments/wh"))["green"]["release"]
    print(f"  +{since(green['created_at']):5.1f} s release {green['name']} registered")
    for event in history(stack.http, "wh"):
        if since(event["at"]) > 0:
            print(f"  +{since(event['at']):5.1f} s {event['action']}: {event['reason'][:90]}")
    return seconds


def test_moving_candidate_stages_compares_and_writes_the_verdict_back(
    stack: Stack, moved: float
) -> None:
    tags = prompt_tags(stack.client, 2)
    assert tags["bgserve.verdict"] == "passed" and tags["bgserve.deployment"] == "wh"
    assert tags["bgserve.compared_with"] == "models:/summarizer/1 + prompts:/summarize/1"
    assert tags["bgserve.report_url"].startswith(stack.mlflow)
    run = stack.client.get_run(tags["bgserve.comparison_run_id"])
    assert run.data.tags["bgserve.deployment"] == "wh"
    assert run.data.tags["bgserve.trigger"].startswith("webhook prompt_alias.created")
    deployment = ok(stack.http.get("/deployments/wh"))
    green = deployment["green"]["release"]
    assert deployment["phase"] == "staged" and deployment["gate"]["passed"]
    assert (green["model_version"], green["prompt_version"]) == (1, 2)
    automatic = [e for e in history(stack.http, "wh") if e["principal"] == "bgserve"]
    assert [e["action"] for e in automatic] == ["stage", "compare", "follow-verdict"]
    trigger = automatic[0]["details"]["trigger"]
    assert (trigger["source"], trigger["event"], trigger["version"]) == (
        "webhook",
        "prompt_alias.created",
        2,
    )
    assert all(e["details"]["trigger"] == trigger for e in automatic)
    assert automatic[1]["details"]["mlflow_run_id"] == tags["bgserve.comparison_run_id"]
    rule = rule_of(stack.http, "wh")
    assert rule["last_event"] == trigger
    # The rule may look once more at the same move after it changed the deployment: that
    # look finds the verdict written and says so.
    outcome = rule["last_outcome"]
    assert outcome["action"] == "compared" or (
        outcome["action"] == "ignored" and "written already" in outcome["reason"]
    ), outcome
    assert moved < 60


def _delivery(delivery_id: str, body: str, secret: str = SECRET, age: int = 0) -> dict[str, str]:
    stamp = str(int(time.time()) - age)
    return {
        "content-type": "application/json",
        "x-mlflow-delivery-id": delivery_id,
        "x-mlflow-timestamp": stamp,
        "x-mlflow-signature": sign(secret, delivery_id, stamp, body.encode()),
    }


def test_forged_stale_oversized_and_replayed_deliveries_change_nothing(
    stack: Stack, moved: float
) -> None:
    http = stack.http
    data = {"name": PROMPT, "alias": "candidate", "version": "2"}
    body = json.dumps({"entity": "prompt_alias", "action": "created", "data": data})
    events, rule = history(http, "wh"), rule_of(http, "wh")

    def post(headers: dict[str, str], content: str = body) -> int:
        return http.post("/follow/webhook", content=content, headers=headers).status_code

    forged = _delivery("forged-1", body, secret="not-the-secret-0123456789")
    assert post(forged) == 401
    assert post({k: v for k, v in forged.items() if k != "x-mlflow-signature"}) == 401
    assert post(_delivery("stale-1", body, age=3600)) == 401
    big = body + " " * 70_000
    assert post(_delivery("big-1", big), big) == 413
    assert history(http, "wh") == events and rule_of(http, "wh") == rule
    # A delivery of a move already handled (MLflow may send one twice): taken once,
    # handled, and nothing changes; the same delivery again is refused as a replay.
    again = _delivery("again-1", body)
    accepted = http.post("/follow/webhook", content=body, headers=again)
    assert accepted.status_code == 202 and accepted.json()["deployments"] == ["wh"]
    after = settled(http, "wh", lambda r: r["last_event"].get("delivery_id") == "again-1")
    assert after["last_outcome"]["action"] == "ignored"
    assert "written already" in after["last_outcome"]["reason"]
    assert post(again) == 409
    assert history(http, "wh") == events and rule_of(http, "wh") == after


def test_a_newer_move_supersedes_the_candidate_and_a_move_back_to_live_does_nothing(
    stack: Stack, moved: float
) -> None:
    http, client = stack.http, stack.client
    template = demo_templates()[0]
    third = new_prompt_version(client, f"Third try. {template}")
    fourth = new_prompt_version(client, f"Fourth try. {template}")
    known = {r["id"] for r in ok(http.get("/releases"))}

    def third_registered() -> bool:
        new = [r for r in ok(http.get("/releases")) if r["id"] not in known]
        return any(r["prompt_version"] == third for r in new)

    move_alias(stack.mlflow, PROMPT, "candidate", third)
    wait_for(third_registered, 60, "the third version's release")
    # Its slot is starting now: the next move supersedes it before it is compared.
    move_alias(stack.mlflow, PROMPT, "candidate", fourth)
    wait_for(lambda: prompt_tags(client, fourth).get("bgserve.verdict"), 120, "the verdict")
    assert prompt_tags(client, third)["bgserve.verdict"] == "superseded"
    assert prompt_tags(client, fourth)["bgserve.verdict"] == "passed"
    deployment = ok(http.get("/deployments/wh"))
    assert deployment["green"]["release"]["prompt_version"] == fourth
    assert deployment["gate"]["passed"] and not deployment["gate"]["stale"]
    actions = [e["action"] for e in history(http, "wh")]
    assert actions.count("follow-superseded") == 1 and actions.count("compare") == 2

    events = history(http, "wh")
    move_alias(stack.mlflow, PROMPT, "candidate", 1)
    back = settled(http, "wh", lambda r: r["last_event"].get("version") == 1)
    assert back["last_outcome"]["action"] == "ignored" and "live" in back["last_outcome"]["reason"]
    assert history(http, "wh") == events
    assert ok(http.get("/deployments/wh"))["green"] == deployment["green"]


def test_auto_promote_promotes_a_pass_through_its_plan_and_never_a_fail(stack: Stack) -> None:
    http, client = stack.http, stack.client
    deploy(http, "auto", stack.blue)
    plan = {"steps": [10, 100], "bake_s": 1}
    follow(http, "auto", prompt_alias="auto-candidate", auto_promote=True, plan=plan)
    # Without the "Text:" marker the demo model summarizes the instruction itself: its first
    # twelve words, none of the text, so green fails the assertions blue passes.
    instruction = "Please write one short plain sentence that sums up everything said below"
    failing = new_prompt_version(client, f"{instruction} for a busy reader: {{{{text}}}}")
    move_alias(stack.mlflow, PROMPT, "auto-candidate", failing)
    wait_for(lambda: prompt_tags(client, failing).get("bgserve.verdict"), 120, "the verdict")
    assert prompt_tags(client, failing)["bgserve.verdict"] == "failed"
    failed = settled(http, "auto", lambda r: r["last_event"].get("version") == failing)
    assert failed["last_outcome"]["action"] == "compared"
    assert ok(http.get("/deployments/auto"))["phase"] == "staged"
    assert not [e for e in history(http, "auto") if e["action"] in ("shift", "promote")]

    passing = new_prompt_version(client, f"Auto try. {demo_templates()[0]}")
    move_alias(stack.mlflow, PROMPT, "auto-candidate", passing)
    started = settled(http, "auto", lambda r: r["last_event"].get("version") == passing)
    assert started["last_outcome"]["action"] == "promoting"
    deployment = ok(http.get("/deployments/auto"))
    green = deployment["green"]["release"]
    assert green["prompt_version"] == passing and deployment["plan"]["steps"] == [10, 100]
    # A plan starts by applying its first step (no warm-up here): green to 10%.
    (plan_event,) = [e for e in history(http, "auto") if "steps" in (e["details"] or {})]
    assert plan_event["action"] == "shift" and plan_event["principal"] == "bgserve"
    assert plan_event["weights_after"][str(green["id"])] == 10
    assert plan_event["details"]["steps"] == [10, 100] and plan_event["details"]["force"] is False
    assert plan_event["details"]["trigger"]["version"] == passing
    ok(http.post("/deployments/auto/revert", json={}))


def test_polling_finds_a_model_alias_move_without_any_webhook(stack: Stack, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home", stack.mlflow).model_copy(
        update={"follow_poll_seconds": 0.5}
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        body = {"name": "polled-blue", "model_uri": f"models:/{MODEL}/1"}
        body["prompt_uri"] = f"prompts:/{PROMPT}/1"
        blue = ok(client.post("/releases", json=body), 201)["id"]
        deploy(client, "polled", blue)
        follow(client, "polled", model_alias="poll-candidate")
        started = time.monotonic()
        move_alias(stack.mlflow, MODEL, "poll-candidate", 2)

        def verdict() -> Any:
            return stack.client.get_model_version(MODEL, "2").tags.get("bgserve.verdict")

        found = wait_for(verdict, 120, "the verdict on models:/summarizer/2")
        print(f"\nmodel alias moved -> verdict by polling: {time.monotonic() - started:.1f} s")
        assert found == "failed"  # version 2 cuts long sentences: the gate refuses it
        (stage,) = [e for e in history(client, "polled") if e["action"] == "stage"]
        assert stage["principal"] == "bgserve"
        assert stage["details"]["trigger"]["source"] == "poll"
        assert stage["details"]["trigger"]["uri"] == "models:/summarizer@poll-candidate"
        green = ok(client.get("/deployments/polled"))["green"]["release"]
        assert (green["model_version"], green["prompt_version"]) == (2, 1)
