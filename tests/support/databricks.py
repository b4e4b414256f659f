"""A Databricks stand-in: the workspace's Serving Endpoints REST API and the endpoints'
invocation routes, answered in process under the SDK's own transport (``Config(
http_adapter=...)``, which the SDK mounts for http and https).

What it does, following the REST reference and Databricks' documented behaviour:

- **Every request body is validated** against the SDK's request types (see
  :mod:`tests.support.databricks_rest`): an unknown member, a missing required field, a
  wrong JSON type or an unknown enum value is a 400 ``INVALID_PARAMETER_VALUE``. Every
  call needs the token (401 ``UNAUTHENTICATED``). Errors come as ``{"error_code",
  "message"}``.
- **Databricks' rules** (:mod:`tests.support.databricks_endpoints`): endpoint and served
  entity names are letters, digits, '-' and '_' (endpoints at most 63 characters); at most
  ten served entities, each a model version with a workload size; the traffic config's
  routes name served entities of the same config, whole percents summing to 100; a name
  taken is 409 ``RESOURCE_ALREADY_EXISTS``, a missing endpoint 404
  ``RESOURCE_DOES_NOT_EXIST``, and a config update while one is in progress 409
  ``RESOURCE_CONFLICT``.
- **Config updates** go IN_PROGRESS with the new config as ``pending_config``; once each
  new entity's model serves (``on_entity``) the config takes its place (NOT_UPDATING,
  READY). An entity that fails leaves the previous config serving, the update
  UPDATE_FAILED and the failed entity's state in ``pending_config``; one whose model never
  serves (``starving``) fails after ``starve_seconds``.
- **429 REQUEST_LIMIT_EXCEEDED** with ``Retry-After: 1`` for the next ``throttle`` requests.
- **Invocations**: ``/serving-endpoints/<name>/invocations`` picks an entity by the traffic
  config, ``/serving-endpoints/<name>/served-models/<entity>/invocations`` calls one; each
  body is checked against ``query``'s request type and handed to ``on_invoke``; each call
  an entity answered is counted for the endpoint's **metrics export**
  (``/api/2.0/serving-endpoints/<name>/metrics``: :mod:`tests.support.databricks_metrics`).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from tests.support.databricks_endpoints import ServingEndpoints
from tests.support.databricks_metrics import EndpointMetrics
from tests.support.databricks_rest import Answer, InProcessAdapter, db_error

HOST = "https://dbc-0a1b2c3d-4e5f.cloud.databricks.com"
_ROUTES = [
    ("endpoints", r"/api/2\.0/serving-endpoints"),
    ("endpoint", r"/api/2\.0/serving-endpoints/(?P<ep>[^/]+)"),
    ("config", r"/api/2\.0/serving-endpoints/(?P<ep>[^/]+)/config"),
    ("metrics", r"/api/2\.0/serving-endpoints/(?P<ep>[^/]+)/metrics"),
    ("invoke", r"/serving-endpoints/(?P<ep>[^/]+)/invocations"),
    ("invoke", r"/serving-endpoints/(?P<ep>[^/]+)/served-models/(?P<entity>[^/]+)/invocations"),
]


class DatabricksStandIn(ServingEndpoints, EndpointMetrics):
    """The Serving Endpoints API of one workspace (module docstring); tests read its state
    directly. ``metrics_period`` is how many seconds each count of the metrics export
    covers (a minute on Databricks)."""

    def __init__(
        self,
        operation_seconds: float = 0.05,
        starve_seconds: float = 5.0,
        metrics_period: float = 60.0,
    ) -> None:
        self.operation_seconds, self.starve_seconds = operation_seconds, starve_seconds
        self.metrics_period, self.clock = metrics_period, time.time
        self.observed = {}
        self.token = f"dapi{secrets.token_hex(16)}"
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.refused: list[tuple[str, str, int, str]] = []  # method, path, status, code
        self.throttle, self.throttled = 0, 0
        self.starving: set[str] = set()  # "endpoint/entity" whose model never serves
        self.updates = threading.Event()  # config updates complete only while set
        self.updates.set()
        self.lock = threading.RLock()
        # What serves the entities: returns an error message when an entity cannot serve.
        self.on_entity: Callable[[str, dict[str, Any]], str | None] = lambda ep, e: None
        self.on_entity_removed: Callable[[str, str], None] = lambda ep, name: None
        self.on_invoke: Callable[[str, str, bytes], tuple[int, bytes]] = self.no_instance
        self.adapter = InProcessAdapter(self.answer)

    # ----- what tests use -----

    def client(self, **config: Any) -> Any:
        """A WorkspaceClient of the stand-in's workspace, every call through its adapter."""
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.core import Config

        settings = {"host": HOST, "token": self.token, "http_adapter": self.adapter, **config}
        return WorkspaceClient(config=Config(**settings))

    def settings(self, **extra: Any) -> dict[str, Any]:
        """The flat settings of a Databricks backend on the stand-in."""
        return {
            "backend": "databricks",
            "databricks_host": HOST,
            "databricks_poll_seconds": 0.02,
            **extra,
        }

    def left(self) -> dict[str, list[str]]:
        """Every endpoint and every served entity (``endpoint/entity``) of a config or a
        pending config."""
        with self.lock:
            found = []
            for name, ep in self.endpoints.items():
                for config in (ep.get("config"), ep.get("pending_config")):
                    found += [
                        f"{name}/{e['name']}" for e in (config or {}).get("served_entities", [])
                    ]
            return {"endpoints": sorted(self.endpoints), "entities": sorted(set(found))}

    def traffic(self, endpoint: str) -> dict[str, int]:
        """The current config's percent of each entity."""
        with self.lock:
            config = (self.endpoints.get(endpoint) or {}).get("config") or {}
            routes = (config.get("traffic_config") or {}).get("routes") or []
            return {r["served_entity_name"]: r["traffic_percentage"] for r in routes}

    def take_down(self, endpoint: str, entity: str) -> None:
        """The entity's model fails: Databricks reports its deployment failed."""
        with self.lock:
            for found in self.endpoints[endpoint]["config"]["served_entities"]:
                if found["name"] == entity:
                    found["state"] = {
                        "deployment": "DEPLOYMENT_FAILED",
                        "deployment_state_message": "The model server crashed.",
                    }

    @staticmethod
    def no_instance(endpoint: str, entity: str, body: bytes) -> tuple[int, bytes]:
        message = {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "No model serves."}
        return 503, json.dumps(message).encode()

    # ----- the API -----

    def answer(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Answer:
        path = urlsplit(url).path
        found = self._refusal(path, headers)
        if found is None:
            found = self._route(method, path, body)
        if found[0] >= 400:
            code = found[2].get("error_code", "") if isinstance(found[2], dict) else ""
            with self.lock:
                self.refused.append((method, path, found[0], code))
        return found

    def _refusal(self, path: str, headers: dict[str, str]) -> Answer | None:
        if path == "/.well-known/databricks-config":  # host metadata: none in this workspace
            return db_error(404, "NOT_FOUND", "No host metadata.")
        with self.lock:
            if self.throttle > 0:
                self.throttle -= 1
                self.throttled += 1
                answer = db_error(
                    429, "REQUEST_LIMIT_EXCEEDED", "Too many requests. Please try again later."
                )
                return answer[0], {"Retry-After": "1"}, answer[2]
        if headers.get("authorization") != f"Bearer {self.token}":
            return db_error(401, "UNAUTHENTICATED", "Invalid access token.")
        return None

    def _route(self, method: str, path: str, body: bytes) -> Answer:
        for kind, pattern in _ROUTES:
            match = re.fullmatch(pattern, path)
            if match is None:
                continue
            handler = getattr(self, f"_{method.lower()}_{kind}", None)
            if handler is None:
                return db_error(405, "ENDPOINT_NOT_FOUND", f"{method} is not allowed on {path}")
            if kind == "invoke":
                answer: Answer = handler(body, **match.groupdict())
                return answer
            try:
                data = json.loads(body) if body else None
            except ValueError:
                return db_error(400, "MALFORMED_REQUEST", "Invalid JSON in the request body.")
            with self.lock:
                answer = handler(data, **match.groupdict())
                return answer
        return db_error(404, "ENDPOINT_NOT_FOUND", f"No API found for '{path}'.")
