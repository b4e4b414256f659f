"""An Azure ML stand-in: Azure Resource Manager's Microsoft.MachineLearningServices API for
online endpoints, online deployments and environment versions, answered in process under
the SDK's own pipelines (MLClient passes ``transport=`` down to every azure-core client).

What it does, following the Azure ML REST reference and ARM's conventions:

- **Every request body is validated** against the SDK's REST models (see
  :mod:`tests.support.azureml_rest`): an unknown, missing or mistyped member is a 400
  ``InvalidRequestContent`` with ARM's error shape. Every call needs the credential's
  bearer token (401 ``AuthenticationFailed``) and an ``api-version`` (400
  ``MissingApiVersionParameter``).
- **Azure's rules**: endpoint and deployment names are 3-32 characters, letters, digits and
  '-', starting with a letter and ending with a letter or digit; ``traffic`` holds whole
  percents of existing deployments summing to 100 (or nothing routed at all);
  ``mirrorTraffic`` sums to at most 50 and never mirrors to a deployment with live
  traffic; a deployment with traffic (live or mirrored) cannot be deleted; a deployment
  needs its endpoint and an existing environment version.
- **Long-running operations as ARM answers them**: PUT answers 201/200 with the resource
  (provisioningState Creating/Updating) and an ``Azure-AsyncOperation`` status URL, DELETE
  202 with ``Azure-AsyncOperation`` and ``Location``; the status reads InProgress until the
  work is done, then Succeeded or Failed with the error. ARM asks pollers to wait with
  ``Retry-After`` in seconds; the stand-in sends ``x-ms-retry-after-ms`` (which azure-core
  honours first) so the SDK's pollers finish in milliseconds.
- **409 Conflict** for a change of an endpoint while an operation on it or one of its
  deployments runs (deleting a deployment still being created cancels its creation), and
  **429** with ``Retry-After`` for the next ``throttle`` requests.
- A deployment succeeds once ``on_deployment`` (what runs its container) says it serves;
  one whose container never answers (``starving``) fails after ``starve_seconds`` with
  ``ResourceNotReady``, as Azure reports a readiness probe that never passes.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.azureml_monitor import MonitorMetrics
from tests.support.azureml_resources import OnlineResources
from tests.support.azureml_rest import (
    Answer,
    InProcessTransport,
    arm_error,
    body_problems,
    invalid,
    missing,
)

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "ml-rg"
WORKSPACE = "ml-ws"
LOCATION = "westeurope"
ARM = "https://management.azure.com"
PROVIDER = "providers/Microsoft.MachineLearningServices"
GROUP_PATH = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
WS_PATH = f"{GROUP_PATH}/{PROVIDER}/workspaces/{WORKSPACE}"
STATUS_API = "api-version=2023-04-01-preview"
BUSY = frozenset({"Creating", "Updating", "Deleting"})
_ROUTES = [
    ("workspace", rf"{WS_PATH}\Z"),
    ("endpoints", rf"{WS_PATH}/onlineEndpoints\Z"),
    ("endpoint", rf"{WS_PATH}/onlineEndpoints/(?P<ep>[^/]+)\Z"),
    ("keys", rf"{WS_PATH}/onlineEndpoints/(?P<ep>[^/]+)/listKeys\Z"),
    ("deployments", rf"{WS_PATH}/onlineEndpoints/(?P<ep>[^/]+)/deployments\Z"),
    ("deployment", rf"{WS_PATH}/onlineEndpoints/(?P<ep>[^/]+)/deployments/(?P<dep>[^/]+)\Z"),
    ("environment", rf"{WS_PATH}/environments/(?P<env>[^/]+)/versions/(?P<ver>[^/]+)\Z"),
    (
        "status",
        rf"/subscriptions/{SUBSCRIPTION}/{PROVIDER}/locations/{LOCATION}/mfeOperations(?P<kind>Status|Results)/(?P<op>[^/]+)\Z",
    ),
]


_METRICS = rf"(?P<id>{WS_PATH}/onlineEndpoints/(?P<ep>[^/]+))/providers/Microsoft.Insights/metrics"


class Credential:
    """A TokenCredential giving the stand-in's one valid token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kw: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.token, int(time.time()) + 3600)


class AzureMLStandIn(OnlineResources):
    """The ARM API of one workspace (module docstring); tests read its state directly."""

    def __init__(self, operation_seconds: float = 0.05, starve_seconds: float = 5.0) -> None:
        self.operation_seconds, self.starve_seconds = operation_seconds, starve_seconds
        self.token = secrets.token_hex(8)
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.deployments: dict[str, dict[str, dict[str, Any]]] = {}  # endpoint -> name -> body
        self.environments: dict[str, dict[str, Any]] = {}  # ARM id -> body
        self.keys: dict[str, tuple[str, str]] = {}
        self.operations: dict[str, dict[str, Any]] = {}
        self.refused: list[tuple[str, str, int, str]] = []  # method, path, status, code
        self.throttle, self.throttled = 0, 0
        self.starving: set[str] = set()  # "endpoint/deployment" whose container never serves
        self.updates = threading.Event()  # operations complete only while set
        self.updates.set()
        self.lock = threading.RLock()
        # What runs the containers: returns an error message when the deployment cannot
        # serve; and where an endpoint is scored (its scoring URI).
        self.on_deployment: Callable[[str, str, dict[str, Any]], str | None] = lambda e, d, b: None
        self.on_deployment_deleted: Callable[[str, str], None] = lambda e, d: None
        self.on_endpoint: Callable[[str], str] = self.default_scoring_uri
        self.on_endpoint_deleted: Callable[[str], None] = lambda e: None
        self.monitor = MonitorMetrics(self.endpoints, LOCATION)
        self.transport = InProcessTransport(self.answer)
        self.ws_path, self.location = WS_PATH, LOCATION

    @staticmethod
    def new_keys() -> tuple[str, str]:
        return secrets.token_urlsafe(24), secrets.token_urlsafe(24)

    # ----- what tests use -----

    def client(self, **kw: Any) -> Any:
        """An MLClient of the stand-in's workspace whose pipelines all use its transport."""
        from azure.ai.ml import MLClient

        return MLClient(
            Credential(self.token),
            SUBSCRIPTION,
            RESOURCE_GROUP,
            WORKSPACE,
            transport=self.transport,
            **kw,
        )

    def settings(self, **extra: Any) -> dict[str, Any]:
        """The flat settings of an Azure ML backend on the stand-in."""
        return {
            "backend": "azureml",
            "azureml_subscription_id": SUBSCRIPTION,
            "azureml_resource_group": RESOURCE_GROUP,
            "azureml_workspace": WORKSPACE,
            "azureml_image": "bgserveacr.azurecr.io/bgserve:0.1.0",
            "azureml_poll_seconds": 0.02,
            **extra,
        }

    def left(self) -> dict[str, list[str]]:
        """Every endpoint and deployment (``endpoint/deployment``) that exists."""
        with self.lock:
            deps = [f"{e}/{d}" for e, found in self.deployments.items() for d in found]
            return {"endpoints": sorted(self.endpoints), "deployments": sorted(deps)}

    def traffic(self, endpoint: str) -> dict[str, int]:
        with self.lock:
            found = self.endpoints.get(endpoint)
            return dict(found["properties"].get("traffic") or {}) if found else {}

    def take_down(self, endpoint: str, deployment: str) -> None:
        """The deployment's instances fail: Azure reports the deployment Failed."""
        with self.lock:
            self.deployments[endpoint][deployment]["properties"]["provisioningState"] = "Failed"

    @staticmethod
    def default_scoring_uri(endpoint: str) -> str:
        return f"https://{endpoint}.{LOCATION}.inference.ml.azure.com/score"

    # ----- the API -----

    def answer(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Answer:
        parts = urlsplit(url)
        path = "/" + parts.path.lstrip("/")
        found = self._refusal(parts.query, headers)
        metrics = re.fullmatch(_METRICS, path)
        if found is None and metrics is not None and method == "GET":
            found = self.monitor.answer(metrics.group("ep"), metrics.group("id"), parts.query)
        elif found is None:
            found = self._route(method, parts.path, body)
        if found[0] >= 400:
            error: dict[str, Any] = found[2] or {}
            code = error.get("error", error).get("code", "")
            self.refused.append((method, path, found[0], code))
        return found

    def _refusal(self, query: str, headers: dict[str, str]) -> Answer | None:
        with self.lock:
            if self.throttle > 0:
                self.throttle -= 1
                self.throttled += 1
                answer = arm_error(
                    429,
                    "TooManyRequests",
                    "The request is throttled; retry after the number of seconds in Retry-After.",
                )
                return answer[0], {"Retry-After": "1"}, answer[2]
        if headers.get("authorization") != f"Bearer {self.token}":
            return arm_error(
                401,
                "AuthenticationFailed",
                "Authentication failed: the "
                "Authorization header is missing or its token is invalid.",
            )
        if "api-version" not in parse_qs(query):
            return arm_error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required.",
            )
        return None

    def _route(self, method: str, path: str, body: bytes) -> Answer:
        import json

        for kind, pattern in _ROUTES:
            match = re.fullmatch(pattern, path)
            if match is None:
                continue
            handler = getattr(self, f"_{method.lower()}_{kind}", None)
            if handler is None:
                return arm_error(405, "MethodNotAllowed", f"{method} is not allowed on {path}")
            try:
                data = json.loads(body) if body else None
            except ValueError:
                return arm_error(400, "InvalidRequestContent", "The request body is not JSON.")
            with self.lock:
                answer: Answer = handler(data, **match.groupdict())
                return answer
        return arm_error(404, "ResourceNotFound", f"No resource at {path}.")

    # ----- workspace, environments, keys -----

    def _get_workspace(self, data: Any) -> Answer:
        kind = "Microsoft.MachineLearningServices/workspaces"
        body = {
            "id": WS_PATH,
            "name": WORKSPACE,
            "type": kind,
            "location": LOCATION,
            "properties": {"friendlyName": WORKSPACE},
        }
        return 200, {}, body

    def _put_environment(self, data: Any, env: str, ver: str) -> Answer:
        problems = body_problems("EnvironmentVersion", data)
        if problems:
            return invalid(problems)
        arm_id = f"{WS_PATH}/environments/{env}/versions/{ver}"
        status = 200 if arm_id in self.environments else 201
        self.environments[arm_id] = {**data, "id": arm_id, "name": ver}
        return status, {}, self.environments[arm_id]

    def _get_environment(self, data: Any, env: str, ver: str) -> Answer:
        found = self.environments.get(f"{WS_PATH}/environments/{env}/versions/{ver}")
        return (200, {}, found) if found else missing("environment version", f"{env}:{ver}")

    def _post_keys(self, data: Any, ep: str) -> Answer:
        if ep not in self.endpoints:
            return missing("online endpoint", ep)
        primary, secondary = self.keys[ep]
        return 200, {}, {"primaryKey": primary, "secondaryKey": secondary}

    # ----- operations -----

    def operation(
        self,
        work: Callable[[], str | None],
        done: Callable[[str | None], None],
        *,
        delete: bool = False,
    ) -> dict[str, str]:
        """Start an operation: ``work`` runs on a thread once ``operation_seconds`` passed and
        the stand-in's updates are let through (None or an error message), then ``done``
        records its outcome. The headers ARM answers the request with."""
        op_id = uuid.uuid4().hex
        self.operations[op_id] = {"status": "InProgress"}

        def run() -> None:
            time.sleep(self.operation_seconds)
            self.updates.wait()
            try:
                error = work()
            except Exception as exc:  # what runs the containers failed: the operation fails
                error = f"{type(exc).__name__}: {exc}"
            with self.lock:
                done(error)
                self.operations[op_id] = (
                    {"status": "Succeeded"}
                    if error is None
                    else {
                        "status": "Failed",
                        "error": {"code": "ResourceNotReady", "message": error},
                    }
                )

        threading.Thread(target=run, daemon=True).start()
        base = f"{ARM}/subscriptions/{SUBSCRIPTION}/{PROVIDER}/locations/{LOCATION}"
        headers = {
            "Azure-AsyncOperation": f"{base}/mfeOperationsStatus/{op_id}?{STATUS_API}",
            "x-ms-retry-after-ms": "20",
        }
        if delete:
            headers["Location"] = f"{base}/mfeOperationsResults/{op_id}?{STATUS_API}"
        return headers

    def _get_status(self, data: Any, kind: str, op: str) -> Answer:
        found = self.operations.get(op)
        if found is None:
            return missing("operation", op)
        if kind == "Results":
            return (
                (202, {"x-ms-retry-after-ms": "20"}, None)
                if found["status"] == "InProgress"
                else (204, {}, None)
            )
        return 200, {"x-ms-retry-after-ms": "20"}, {"id": op, "name": op, **found}

    def busy(self, ep: str, ignore: str | None = None) -> str | None:
        """What runs on the endpoint now (besides deployment ``ignore``), None when
        nothing does."""
        state = self.endpoints[ep]["properties"].get("provisioningState")
        if state in BUSY:
            return f"the endpoint is {state}"
        for name, dep in self.deployments.get(ep, {}).items():
            if name != ignore and dep["properties"].get("provisioningState") in BUSY:
                return f"deployment {name} is {dep['properties']['provisioningState']}"
        return None
