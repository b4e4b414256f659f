"""The Databricks stand-in's serving endpoints: create, get, delete, config updates and
invocations as the Serving Endpoints REST API answers them, with Databricks' rules (see
tests/support/databricks.py)."""

from __future__ import annotations

import copy
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.support.databricks_rest import Answer, db_error, invalid, missing, request_problems

NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
WORKLOAD_SIZES = ("Small", "Medium", "Large")
MAX_ENTITIES = 10
# What an entity's update compares: a change of any of these redeploys it.
SPEC = (
    "entity_name", "entity_version", "workload_size", "workload_type",
    "scale_to_zero_enabled", "environment_vars",
)  # fmt: skip


def name_problem(kind: str, name: str, longest: int) -> str | None:
    """Databricks' rule for endpoint and served entity names, None when ``name`` keeps it."""
    if name and len(name) <= longest and set(name) <= NAME_CHARS:
        return None
    return (
        f"Invalid {kind} name '{name}': it can consist of alphanumeric characters, dashes "
        f"and underscores, at most {longest} characters."
    )


class ServingEndpoints:
    """The endpoint handlers of :class:`tests.support.databricks.DatabricksStandIn`."""

    endpoints: dict[str, dict[str, Any]]
    operation_seconds: float
    starve_seconds: float
    starving: set[str]
    updates: threading.Event
    lock: threading.RLock
    on_entity: Callable[[str, dict[str, Any]], str | None]
    on_entity_removed: Callable[[str, str], None]
    on_invoke: Callable[[str, str, bytes], tuple[int, bytes]]
    observe: Callable[[str, str, int], None]

    def _post_endpoints(self, data: Any) -> Answer:
        problems = request_problems("create", data)
        if problems:
            return invalid(problems[0])
        name = data["name"]
        problem = name_problem("endpoint", name, 63) or self._config_problem(data.get("config"))
        if problem is not None:
            return invalid(problem)
        if name in self.endpoints:
            return db_error(
                409, "RESOURCE_ALREADY_EXISTS", f"Endpoint with name '{name}' already exists."
            )
        self.endpoints[name] = {
            "name": name,
            "id": f"{random.getrandbits(64):016x}",
            "creator": "bgserve@example.com",
            "creation_timestamp": int(time.time() * 1000),
            "tags": data.get("tags") or [],
            "permission_level": "CAN_MANAGE",
            "route_optimized": False,
            "state": {"ready": "NOT_READY", "config_update": "NOT_UPDATING"},
        }
        config = dict(data["config"])
        config.pop("name", None)
        self._start_update(name, config)
        return 200, {}, self.endpoints[name]

    def _get_endpoint(self, data: Any, ep: str) -> Answer:
        found = self.endpoints.get(ep)
        return (200, {}, found) if found else missing("Endpoint", ep)

    def _delete_endpoint(self, data: Any, ep: str) -> Answer:
        found = self.endpoints.pop(ep, None)
        if found is None:
            return missing("Endpoint", ep)
        for config in (found.get("config"), found.get("pending_config")):
            for entity in (config or {}).get("served_entities", []):
                self.on_entity_removed(ep, entity["name"])
        return 200, {}, None

    def _put_config(self, data: Any, ep: str) -> Answer:
        problems = request_problems("update_config", data)
        if problems:
            return invalid(problems[0])
        found = self.endpoints.get(ep)
        if found is None:
            return missing("Endpoint", ep)
        if found["state"]["config_update"] == "IN_PROGRESS":
            return db_error(
                409,
                "RESOURCE_CONFLICT",
                f"Endpoint {ep} is currently updating: wait until the update in progress "
                "completes or fails.",
            )
        problem = self._config_problem(data)
        if problem is not None:
            return invalid(problem)
        self._start_update(ep, data)
        return 200, {}, found

    def _config_problem(self, config: Any) -> str | None:
        entities = (config or {}).get("served_entities") or []
        if not entities or len(entities) > MAX_ENTITIES:
            return f"A config needs 1 to {MAX_ENTITIES} served entities, got {len(entities)}."
        names = [e.get("name") or "" for e in entities]
        for entity, name in zip(entities, names, strict=True):
            problem = name_problem("served entity", name, 63)
            if problem is not None:
                return problem
            if not (entity.get("entity_name") and entity.get("entity_version")):
                return f"Served entity {name} needs entity_name and entity_version."
            if entity.get("workload_size") not in WORKLOAD_SIZES:
                return f"Served entity {name}'s workload_size must be one of {WORKLOAD_SIZES}."
        if len(set(names)) != len(names):
            return f"Served entity names must be unique, got {names}."
        routes = ((config or {}).get("traffic_config") or {}).get("routes") or []
        return _traffic_problem(routes, set(names))

    # ----- config updates -----

    def _start_update(self, ep: str, config: dict[str, Any]) -> None:
        endpoint = self.endpoints[ep]
        old = {e["name"]: e for e in (endpoint.get("config") or {}).get("served_entities", [])}
        pending = []
        for entity in config["served_entities"]:
            kept = old.get(entity["name"])
            same = kept is not None and all(kept.get(k) == entity.get(k) for k in SPEC)
            state = (
                kept["state"]
                if kept is not None and same
                else {"deployment": "DEPLOYMENT_CREATING"}
            )
            pending.append(
                {**entity, "state": copy.deepcopy(state), "creator": "bgserve@example.com"}
            )
        version = (endpoint.get("config") or {}).get("config_version", 0) + 1
        endpoint["pending_config"] = {
            "served_entities": pending,
            "traffic_config": config.get("traffic_config") or _default_traffic(pending),
            "config_version": version,
            "start_time": int(time.time() * 1000),
        }
        endpoint["state"]["config_update"] = "IN_PROGRESS"
        fresh = [e for e in pending if e["state"]["deployment"] == "DEPLOYMENT_CREATING"]
        threading.Thread(target=self._run_update, args=(ep, endpoint, fresh), daemon=True).start()

    def _run_update(self, ep: str, endpoint: dict[str, Any], fresh: list[dict[str, Any]]) -> None:
        time.sleep(self.operation_seconds)
        self.updates.wait()
        failures = {}
        for entity in fresh:
            error = self._serve_entity(ep, endpoint, entity)
            if error is not None:
                failures[entity["name"]] = error
        with self.lock:
            if self.endpoints.get(ep) is not endpoint:
                return  # deleted meanwhile
            self._finish_update(ep, endpoint, fresh, failures)

    def _serve_entity(
        self, ep: str, endpoint: dict[str, Any], entity: dict[str, Any]
    ) -> str | None:
        deadline = time.monotonic() + self.starve_seconds
        while f"{ep}/{entity['name']}" in self.starving:
            if time.monotonic() >= deadline:
                return (
                    "The served model did not become ready: its container failed its health checks."
                )
            time.sleep(0.02)
        try:
            return self.on_entity(ep, copy.deepcopy(entity))
        except Exception as exc:  # what serves the model failed: the entity fails
            return f"{type(exc).__name__}: {exc}"

    def _finish_update(
        self,
        ep: str,
        endpoint: dict[str, Any],
        fresh: list[dict[str, Any]],
        failures: dict[str, str],
    ) -> None:
        pending = endpoint["pending_config"]
        if failures:
            for entity in pending["served_entities"]:
                if entity["name"] in failures:
                    entity["state"] = {
                        "deployment": "DEPLOYMENT_FAILED",
                        "deployment_state_message": failures[entity["name"]],
                    }
            for entity in fresh:
                self.on_entity_removed(ep, entity["name"])
            endpoint["state"]["config_update"] = "UPDATE_FAILED"
            return
        for entity in fresh:
            entity["state"] = {"deployment": "DEPLOYMENT_READY", "deployment_state_message": ""}
        kept = {e["name"] for e in pending["served_entities"]}
        for entity in (endpoint.get("config") or {}).get("served_entities", []):
            if entity["name"] not in kept:
                self.on_entity_removed(ep, entity["name"])
        endpoint["config"] = {k: v for k, v in pending.items() if k != "start_time"}
        del endpoint["pending_config"]
        endpoint["state"] = {"ready": "READY", "config_update": "NOT_UPDATING"}

    # ----- invocations -----

    def _post_invoke(self, body: bytes, ep: str, entity: str | None = None) -> Answer:
        try:
            problems = request_problems("query", json.loads(body))
        except ValueError:
            problems = ["The request body is not JSON."]
        with self.lock:
            found = self.endpoints.get(ep)
            config = copy.deepcopy((found or {}).get("config") or {})
        if found is None:
            return missing("Endpoint", ep)
        if problems:
            return db_error(400, "BAD_REQUEST", problems[0])
        names = [e["name"] for e in config.get("served_entities", [])]
        if entity is None:
            entity = _pick((config.get("traffic_config") or {}).get("routes") or [])
        if entity not in names:
            return missing("Served model", f"{ep}/{entity}")
        status, data = self.on_invoke(ep, str(entity), body)
        self.observe(ep, str(entity), status)
        return status, {"served-model-name": str(entity), "Content-Type": "application/json"}, data


def _traffic_problem(routes: list[dict[str, Any]], names: set[str]) -> str | None:
    named = [r.get("served_entity_name") or r.get("served_model_name") for r in routes]
    unknown = sorted(str(n) for n in named if n not in names)
    if unknown:
        return f"Traffic config routes name served entities not in the config: {unknown}."
    percents = [r["traffic_percentage"] for r in routes]
    if any(not 0 <= p <= 100 for p in percents):
        return "Traffic percentages must be between 0 and 100."
    if routes and sum(percents) != 100:
        return f"The traffic config's percentages must sum to 100, got {sum(percents)}."
    if len(set(named)) != len(named):
        return "A served entity is routed twice."
    return None


def _default_traffic(entities: list[dict[str, Any]]) -> dict[str, Any]:
    """Without a traffic config a lone entity takes all traffic."""
    if len(entities) != 1:
        return {"routes": []}
    return {"routes": [{"served_entity_name": entities[0]["name"], "traffic_percentage": 100}]}


def _pick(routes: list[dict[str, Any]]) -> str | None:
    weights = [r["traffic_percentage"] for r in routes]
    if not routes or sum(weights) == 0:
        return None
    chosen = random.choices(routes, weights=weights)[0]
    return str(chosen.get("served_entity_name") or chosen.get("served_model_name"))
