"""Plays KServe's LLMInferenceService controller (v1alpha2, group/weight split of
kserve#5725) for the tests: it writes the status the real controller writes, through the
``/status`` subresource of the real API server, whose CRD schema and CEL rules check it.

What it writes for a member, as KServe's ``llm_inference_service_lifecycle.go`` and group
reconciler do: ``observedGeneration``; the conditions ``PresetsCombined``,
``MainWorkloadReady`` → ``WorkloadsReady``, ``GatewaysReady`` + ``HTTPRoutesReady`` →
``RouterReady``, their roll-up ``Ready``, and ``GroupReady`` for a member of a group;
``url`` (the gateway path of the member); ``workloads`` (the main Deployment and the
workload Service); and ``router.group``: the group's name and every member still alive with
its weight (``stopped`` for a force-stopped one) and its backend (the member's workload
Service, port 8000). A change of one member's weight refreshes every member's group view,
as the real controller enqueues the whole group.

It writes no HTTPRoute (those are the gateway's and out of these tests) and, standing in
for KServe's admission webhook too, records as an error a member that declares a group
without a weight or a weight without a group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bgserve.kube.kserve.llm_isvc import (
    LLM_INFERENCE_SERVICE,
    LLM_PORT,
    STOP_ANNOTATION,
    WORKLOAD_SERVICE_SUFFIX,
)
from tests.support.kube import Cluster, Controller

Obj = dict[str, Any]
PLURAL = LLM_INFERENCE_SERVICE.plural
GATEWAY_HOST = "gateway.example.com"
_UNAVAILABLE = ("MinimumReplicasUnavailable", "Deployment does not have minimum availability.")


class FakeLlmController:
    """KServe's LLMInferenceService controller, status only: every member Ready except
    those :meth:`take_down` names (no available replica) or :meth:`refuse_config` names
    (their configuration cannot be combined: ``PresetsCombined`` False)."""

    def __init__(self, server: Cluster) -> None:
        self.server = server
        self.down: set[str] = set()
        self.refused: set[str] = set()
        self.controller = Controller(server, (PLURAL,), self.reconcile, self.removed)

    @property
    def errors(self) -> list[BaseException]:
        return self.controller.errors

    def __enter__(self) -> FakeLlmController:
        self.controller.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.__exit__(*exc)

    def take_down(self, name: str) -> None:
        """Report the member without an available replica from now on, at its current
        generation (its pods died; the spec did not change)."""
        self.down.add(name)
        for obj in self.server.objects(PLURAL):
            if obj["metadata"]["name"] == name:
                self.reconcile(obj)

    def refuse_config(self, name: str) -> None:
        """Report the member's configuration as not combinable from its next reconcile on."""
        self.refused.add(name)

    def reconcile(self, obj: Obj) -> None:
        """Write ``obj``'s status and refresh the group view of the members beside it."""
        _check_webhook_rule(obj)
        group = _group(obj)
        members = [o for o in self.server.objects(PLURAL) if group and _group(o) == group]
        for member in members or [obj]:
            self._write(member, members)

    def removed(self, obj: Obj) -> None:
        """A deleted member leaves its group: the others' view is refreshed."""
        group = _group(obj)
        members = [o for o in self.server.objects(PLURAL) if group and _group(o) == group]
        for member in members:
            self._write(member, members)

    def _write(self, obj: Obj, members: list[Obj]) -> None:
        meta = obj["metadata"]
        status = self._status(obj, members)
        group, plural = LLM_INFERENCE_SERVICE.group, LLM_INFERENCE_SERVICE.plural
        self.server.set_status(group, plural, meta["namespace"], meta["name"], status)

    def _status(self, obj: Obj, members: list[Obj]) -> Obj:
        name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
        status: Obj = {"observedGeneration": obj["metadata"]["generation"]}
        if name in self.refused:
            message = f"the merged spec of {name} was refused by the API server"
            status["conditions"] = [
                _cond("PresetsCombined", "False", "InvalidRenderedConfig", message),
                _cond("WorkloadsReady", "Unknown"),
                _cond("RouterReady", "Unknown"),
                _cond("Ready", "False", "InvalidRenderedConfig", message),
            ]
            return status
        up = name not in self.down
        status["conditions"] = _conditions(up, grouped=bool(_group(obj)))
        status["url"] = f"http://{GATEWAY_HOST}/{namespace}/{name}"
        status["workloads"] = {
            "primary": {
                "apiGroup": "apps",
                "kind": "Deployment",
                "name": f"{name}-kserve",
                "readyReplicas": 1 if up else 0,
            },
            "service": {"kind": "Service", "name": f"{name}{WORKLOAD_SERVICE_SUFFIX}"},
        }
        if _group(obj):
            status["router"] = {"group": _group_status(_group(obj), members)}
        return status


def _cond(kind: str, state: str, reason: str = "", message: str = "") -> Obj:
    cond: Obj = {"type": kind, "status": state}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def _conditions(up: bool, *, grouped: bool) -> list[Obj]:
    workload = (
        _cond("MainWorkloadReady", "True")
        if up
        else _cond("MainWorkloadReady", "False", *_UNAVAILABLE)
    )
    rolled = "True" if up else "False"
    reason = () if up else _UNAVAILABLE
    conditions = [
        _cond("PresetsCombined", "True"),
        workload,
        _cond("WorkloadsReady", rolled, *reason),
        _cond("GatewaysReady", "True"),
        _cond("HTTPRoutesReady", "True"),
        _cond("RouterReady", "True"),
        _cond("Ready", rolled, *reason),
    ]
    if grouped:
        conditions.append(_cond("GroupReady", "True"))
    return conditions


def _group(obj: Mapping[str, Any]) -> str | None:
    route = (obj.get("spec", {}).get("router") or {}).get("route") or {}
    group = route.get("group")
    return str(group) if group else None


def _stopped(obj: Mapping[str, Any]) -> bool:
    return (obj["metadata"].get("annotations") or {}).get(STOP_ANNOTATION) == "true"


def _group_status(group: str | None, members: list[Obj]) -> Obj:
    entries = []
    for member in sorted(members, key=lambda o: o["metadata"]["name"]):
        name = member["metadata"]["name"]
        entry: Obj = {
            "name": name,
            "weight": int(member["spec"]["router"]["route"].get("weight", 0)),
            "backendRef": {
                "group": "",
                "kind": "Service",
                "name": f"{name}{WORKLOAD_SERVICE_SUFFIX}",
                "port": LLM_PORT,
            },
        }
        if _stopped(member):
            entry["stopped"] = True
        entries.append(entry)
    return {"name": group, "members": entries}


def _check_webhook_rule(obj: Mapping[str, Any]) -> None:
    """KServe's webhook refuses a route with a group but no weight, or the reverse."""
    route = (obj.get("spec", {}).get("router") or {}).get("route") or {}
    if ("group" in route) != ("weight" in route):
        raise AssertionError(
            f"{obj['metadata']['name']}: spec.router.route needs group and weight together "
            f"(KServe's webhook would refuse it): {route}"
        )


def group_view(obj: Mapping[str, Any]) -> dict[str, int]:
    """The split the (fake) controller reports on a member: member name to weight."""
    group = ((obj.get("status") or {}).get("router") or {}).get("group") or {}
    return {m["name"]: int(m["weight"]) for m in group.get("members", [])}
