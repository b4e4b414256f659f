"""MLflow webhook deliveries: signed by MLflow's own code, checked by bgserve's verifier;
and the store's record of accepted deliveries, which refuses a replay."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

from bgserve.app.follow_webhook import WebhookVerifier, sign
from bgserve.domain.rollout import DeploymentState
from bgserve.errors import Conflict, Forbidden, InvalidInput, Unauthorized
from bgserve.store import Store
from bgserve.store.follow_store import FollowStore

SECRET = "s3cret-s3cret-s3cret"
NOW = 1_800_000_000.0
BODY = json.dumps(
    {
        "entity": "prompt_alias",
        "action": "created",
        "timestamp": "2027-01-15T08:00:00+00:00",
        "data": {"name": "summarize", "alias": "candidate", "version": "2"},
    }
)


def mlflow_headers(delivery_id: str = "d-1", at: float = NOW, body: str = BODY) -> dict[str, str]:
    """The headers MLflow's delivery code sends, signed by that code."""
    stamp = str(int(at))
    return {
        "x-mlflow-delivery-id": delivery_id,
        "x-mlflow-timestamp": stamp,
        "x-mlflow-signature": _generate_hmac_signature(SECRET, delivery_id, stamp, body),
    }


@pytest.fixture
def verifier() -> WebhookVerifier:
    return WebhookVerifier(SECRET, max_age_s=300, clock=lambda: NOW)


def test_a_delivery_signed_by_mlflow_is_taken_with_its_event(verifier: WebhookVerifier) -> None:
    delivery = verifier.verify(mlflow_headers(), BODY.encode())
    assert (delivery.delivery_id, delivery.event) == ("d-1", "prompt_alias.created")
    assert (delivery.text("name"), delivery.text("alias"), delivery.text("version")) == (
        "summarize",
        "candidate",
        "2",
    )
    assert (
        sign(SECRET, "d-1", str(int(NOW)), BODY.encode()) == mlflow_headers()["x-mlflow-signature"]
    )


def _other_secret(h: dict[str, str]) -> dict[str, str]:
    stamp = h["x-mlflow-timestamp"]
    return h | {
        "x-mlflow-signature": _generate_hmac_signature("other-secret-1234", "d-1", stamp, BODY)
    }


def _without(name: str) -> Callable[[dict[str, str]], dict[str, str]]:
    return lambda h: {k: v for k, v in h.items() if k != name}


def _with(name: str, value: str) -> Callable[[dict[str, str]], dict[str, str]]:
    return lambda h: h | {name: value}


FORGERIES: dict[str, Callable[[dict[str, str]], dict[str, str]]] = {
    "another secret": _other_secret,
    "another delivery id": _with("x-mlflow-delivery-id", "d-2"),
    "wrong digest": _with("x-mlflow-signature", "v1,AAAA"),
    "unknown version": lambda h: h | {"x-mlflow-signature": "v2" + h["x-mlflow-signature"][2:]},
    "not base64": _with("x-mlflow-signature", "v1,not base64!"),
    "unsigned": _without("x-mlflow-signature"),
    "no timestamp": _without("x-mlflow-timestamp"),
    "bad timestamp": _with("x-mlflow-timestamp", "soon"),
    "no delivery id": _without("x-mlflow-delivery-id"),
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_or_altered_delivery_is_refused(verifier: WebhookVerifier, forgery: str) -> None:
    with pytest.raises(Unauthorized):
        verifier.verify(FORGERIES[forgery](mlflow_headers()), BODY.encode())


def test_an_altered_body_is_refused(verifier: WebhookVerifier) -> None:
    with pytest.raises(Unauthorized):
        verifier.verify(mlflow_headers(), BODY.replace('"2"', '"3"').encode())


def test_a_timestamp_outside_the_window_is_refused_either_way(verifier: WebhookVerifier) -> None:
    for at in (NOW - 301, NOW + 301):
        with pytest.raises(Unauthorized, match="window"):
            verifier.verify(mlflow_headers(at=at), BODY.encode())
    assert verifier.verify(mlflow_headers(at=NOW - 299), BODY.encode()).delivery_id == "d-1"


def test_one_of_several_signatures_may_match(verifier: WebhookVerifier) -> None:
    headers = mlflow_headers()
    headers["x-mlflow-signature"] = "v1,AAAA " + headers["x-mlflow-signature"]
    assert verifier.verify(headers, BODY.encode()).event == "prompt_alias.created"


def test_a_signed_body_that_is_no_event_is_invalid(verifier: WebhookVerifier) -> None:
    for body in ("[1]", "not json", json.dumps({"entity": "x", "action": "y"})):
        with pytest.raises(InvalidInput):
            verifier.verify(mlflow_headers(body=body), body.encode())


def test_without_a_secret_every_delivery_is_refused() -> None:
    with pytest.raises(Forbidden, match="BGSERVE_FOLLOW_WEBHOOK_SECRET"):
        WebhookVerifier("", 300).verify(mlflow_headers(), BODY.encode())


def _rule_store(store: Store) -> FollowStore:
    store.create_deployment(DeploymentState(name="chat", blue=1), datetime.now(UTC), "t", "made")
    rules = FollowStore(store.engine)
    rules.put_rule("chat", {"followed": []}, {"source": "rule"}, datetime.now(UTC))
    return rules


def test_a_replayed_delivery_is_refused_and_changes_nothing(store: Store) -> None:
    rules = _rule_store(store)
    now = datetime.now(UTC)
    pick = lambda rows: {row.deployment: {"source": "webhook"} for row in rows}  # noqa: E731
    assert rules.receive("d-1", now, now - timedelta(minutes=10), pick) == ["chat"]
    before = rules.get_rule("chat")
    assert before is not None and before.pending_seq == 2
    with pytest.raises(Conflict, match="replay"):
        rules.receive("d-1", now, now - timedelta(minutes=10), pick)
    assert rules.get_rule("chat") == before


def test_the_replay_record_forgets_deliveries_past_the_window(store: Store) -> None:
    rules = _rule_store(store)
    start = datetime.now(UTC)
    for n in range(5):
        rules.receive(f"d-{n}", start, start - timedelta(minutes=10), lambda rows: {})
    assert rules.deliveries() == 5
    later = start + timedelta(minutes=11)
    rules.receive("d-new", later, later - timedelta(minutes=10), lambda rows: {})
    assert rules.deliveries() == 1


def test_handled_triggers_are_never_moved_back(store: Store) -> None:
    rules = _rule_store(store)
    now = datetime.now(UTC)
    rules.save_progress("chat", {"outcome": {"action": "ignored"}}, 1, now)
    rules.trigger("chat", {"source": "poll"}, now)
    rules.save_progress("chat", {"outcome": {"action": "compared"}}, 0, now)
    stored = rules.get_rule("chat")
    assert stored is not None
    assert (stored.pending_seq, stored.handled_seq) == (2, 1)
    assert stored.progress["outcome"]["action"] == "compared"
    assert stored.trigger == {"source": "poll"}
