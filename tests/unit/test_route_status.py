"""Reading a gateway's HTTPRoute status: taken only when every parent Gateway reports
Accepted and ResolvedRefs True for the spec's generation; a False one is a refusal."""

from __future__ import annotations

from typing import Any

import pytest

from bgserve.errors import BackendError
from bgserve.kube.route_status import RouteRefused, route_taken, taken_report, waiting_on

GROUP = "gateway.networking.k8s.io"


def condition(kind: str, status: str = "True", generation: int = 2, **extra: str) -> Any:
    return {"type": kind, "status": status, "observedGeneration": generation, **extra}


def route(parents: list[dict[str, Any]], *refs: dict[str, Any]) -> dict[str, Any]:
    refs = refs or ({"group": GROUP, "kind": "Gateway", "name": "gw", "namespace": "kserve"},)
    return {
        "metadata": {"name": "chat", "namespace": "models", "generation": 2},
        "spec": {"parentRefs": list(refs)},
        "status": {"parents": parents},
    }


def parent(*conditions: Any, **ref: str) -> dict[str, Any]:
    return {
        "parentRef": ref or {"name": "gw", "namespace": "kserve"},
        "conditions": list(conditions),
    }


def test_both_conditions_true_on_the_current_generation_take_the_route() -> None:
    assert route_taken(route([parent(condition("Accepted"), condition("ResolvedRefs"))])) is True


@pytest.mark.parametrize(
    "conditions",
    [
        [],
        [condition("Accepted")],
        [condition("Accepted"), condition("ResolvedRefs", generation=1)],
        [condition("Accepted", generation=1), condition("ResolvedRefs", generation=1)],
        [condition("Accepted", "Unknown"), condition("ResolvedRefs")],
    ],
    ids=["nothing", "accepted only", "resolved on the old spec", "old spec", "unknown"],
)
def test_anything_short_of_that_keeps_waiting(conditions: list[Any]) -> None:
    assert route_taken(route([parent(*conditions)])) is None


def test_a_false_condition_on_an_old_generation_is_not_a_refusal_of_the_new_spec() -> None:
    old = [condition("Accepted", "False", 1), condition("ResolvedRefs", "False", 1)]
    assert route_taken(route([parent(*old)])) is None


def test_a_false_condition_is_a_refusal_naming_the_gateway_reason_and_message() -> None:
    refused = condition("ResolvedRefs", "False", reason="BackendNotFound", message="no svc x")
    with pytest.raises(RouteRefused) as err:
        route_taken(route([parent(condition("Accepted"), refused)]))
    assert "kserve/gw" in str(err.value) and "models/chat" in str(err.value)
    assert "ResolvedRefs=False (BackendNotFound): no svc x" in str(err.value)


def test_every_parent_must_take_it_and_defaults_name_the_same_gateway() -> None:
    ours = {"name": "gw"}  # namespace defaults to the route's, group and kind to Gateway's
    other = {"name": "edge", "namespace": "infra"}
    both_ok = [condition("Accepted"), condition("ResolvedRefs")]
    reported = parent(*both_ok, group=GROUP, kind="Gateway", name="gw", namespace="models")
    assert route_taken(route([reported], ours)) is True
    assert route_taken(route([reported], ours, other)) is None
    assert route_taken(route([reported, parent(*both_ok, **other)], ours, other)) is True


def test_a_report_on_another_listener_is_not_a_report_on_the_gateway() -> None:
    both_ok = [condition("Accepted"), condition("ResolvedRefs")]
    section = parent(*both_ok, name="gw", namespace="kserve", sectionName="https")
    assert route_taken(route([section])) is None


def test_a_deleted_route_stops_the_wait() -> None:
    with pytest.raises(BackendError, match="deleted"):
        route_taken(None)


def test_what_the_parents_said_so_far_is_told() -> None:
    said = waiting_on(route([parent(condition("Accepted"))]))
    assert said == "Gateway kserve/gw: Accepted=True"
    assert "nothing yet on generation 2" in waiting_on(route([]))


def test_what_was_taken_names_the_route_its_generation_and_the_gateways() -> None:
    taken = route([parent(condition("Accepted"), condition("ResolvedRefs"))])
    assert taken_report(taken) == {
        "route": "models/chat",
        "generation": 2,
        "taken_by": ["kserve/gw"],
    }
    assert taken_report(route([parent(condition("Accepted"))])) is None
