"""The Azure ML stand-in's online endpoints and deployments: PUT, GET, list and DELETE as
the Azure ML REST API answers them, with Azure's rules (see tests/support/azureml.py)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from tests.support.azureml_rest import (
    Answer,
    arm_error,
    body_problems,
    invalid,
    missing,
    name_problem,
)

TYPE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
# What Azure fills in for a managed deployment that does not say (the REST reference's
# defaults): the SDK reads scale settings back and fails without them.
PROBE = {
    "initialDelay": "PT10S",
    "period": "PT10S",
    "timeout": "PT2S",
    "successThreshold": 1,
    "failureThreshold": 30,
}
DEPLOYMENT_DEFAULTS = {
    "scaleSettings": {"scaleType": "Default"},
    "requestSettings": {"requestTimeout": "PT5S", "maxConcurrentRequestsPerInstance": 1},
    "livenessProbe": PROBE,
    "readinessProbe": PROBE,
    "appInsightsEnabled": False,
    "egressPublicNetworkAccess": "Enabled",
}
READ_ONLY = ("provisioningState", "scoringUri", "swaggerUri")


class OnlineResources:
    """The endpoint and deployment handlers of :class:`tests.support.azureml.AzureMLStandIn`."""

    ws_path: str
    location: str
    endpoints: dict[str, dict[str, Any]]
    deployments: dict[str, dict[str, dict[str, Any]]]
    environments: dict[str, dict[str, Any]]
    keys: dict[str, tuple[str, str]]
    starving: set[str]
    starve_seconds: float
    on_deployment: Callable[[str, str, dict[str, Any]], str | None]
    on_deployment_deleted: Callable[[str, str], None]
    on_endpoint: Callable[[str], str]
    on_endpoint_deleted: Callable[[str], None]
    operation: Callable[..., dict[str, str]]
    busy: Callable[..., str | None]
    new_keys: Callable[[], tuple[str, str]]

    # ----- endpoints -----

    def _put_endpoint(self, data: Any, ep: str) -> Answer:
        refused = name_problem("endpoint", ep) or self._endpoint_refusal(data, ep)
        if refused is not None:
            return refused
        existing = self.endpoints.get(ep)
        writable = {k: v for k, v in data["properties"].items() if k not in READ_ONLY}
        if existing is None:
            status, resource = 201, self._new_endpoint(ep, data)
        else:
            status, resource = 200, existing
        resource["tags"] = data.get("tags") or {}
        resource["properties"].update(writable)
        resource["properties"]["provisioningState"] = "Creating" if status == 201 else "Updating"
        self.endpoints[ep] = resource
        headers = self.operation(lambda: None, lambda error: _settle(resource, error))
        return status, headers, resource

    def _endpoint_refusal(self, data: Any, ep: str) -> Answer | None:
        problems = body_problems("OnlineEndpoint", data)
        if problems:
            return invalid(problems)
        if data["location"] != self.location:
            return arm_error(
                400,
                "BadArgument",
                f"The endpoint's location {data['location']} "
                f"is not its workspace's ({self.location}).",
            )
        if ep in self.endpoints and (why := self.busy(ep)) is not None:
            return _conflict(ep, why)
        return self._traffic_refusal(ep, data["properties"])

    def _traffic_refusal(self, ep: str, props: dict[str, Any]) -> Answer | None:
        traffic, mirror = props.get("traffic") or {}, props.get("mirrorTraffic") or {}
        unknown = sorted(n for n in {**traffic, **mirror} if n not in self.deployments.get(ep, {}))
        problem = None
        if unknown:
            problem = f"Traffic names deployments that do not exist on endpoint {ep}: {unknown}"
        elif any(not 0 <= v <= 100 for v in (*traffic.values(), *mirror.values())):
            problem = "Traffic values must be between 0 and 100."
        elif sum(traffic.values()) not in (0, 100):
            problem = f"Traffic values must sum to 100, got {sum(traffic.values())}."
        elif sum(mirror.values()) > 50:
            problem = f"Mirror traffic values must sum to at most 50, got {sum(mirror.values())}."
        elif live := sorted(n for n, v in mirror.items() if v and traffic.get(n)):
            problem = f"Deployments {live} take live traffic and cannot be mirrored to."
        return None if problem is None else arm_error(400, "BadArgument", problem)

    def _new_endpoint(self, ep: str, data: Any) -> dict[str, Any]:
        self.keys[ep] = self.new_keys()
        identity = {
            **(data.get("identity") or {"type": "SystemAssigned"}),
            "principalId": "11111111-1111-1111-1111-111111111111",
            "tenantId": "22222222-2222-2222-2222-222222222222",
        }
        scoring = self.on_endpoint(ep)
        properties = {
            "traffic": {},
            "mirrorTraffic": {},
            "publicNetworkAccess": "Enabled",
            "scoringUri": scoring,
            "swaggerUri": scoring.replace("/score", "/swagger.json"),
        }
        return {
            "id": f"{self.ws_path}/onlineEndpoints/{ep}",
            "name": ep,
            "type": TYPE,
            "location": self.location,
            "identity": identity,
            "properties": properties,
        }

    def _get_endpoint(self, data: Any, ep: str) -> Answer:
        found = self.endpoints.get(ep)
        return (200, {}, found) if found else missing("online endpoint", ep)

    def _delete_endpoint(self, data: Any, ep: str) -> Answer:
        found = self.endpoints.get(ep)
        if found is None:
            return 204, {}, None
        if (why := self.busy(ep)) is not None:
            return _conflict(ep, why)
        found["properties"]["provisioningState"] = "Deleting"
        names = list(self.deployments.get(ep, {}))

        def work() -> None:
            for name in names:
                self.on_deployment_deleted(ep, name)
            self.on_endpoint_deleted(ep)

        def done(error: str | None) -> None:
            self.endpoints.pop(ep, None)
            self.deployments.pop(ep, None)

        return 202, self.operation(work, done, delete=True), None

    # ----- deployments -----

    def _put_deployment(self, data: Any, ep: str, dep: str) -> Answer:
        if ep not in self.endpoints:
            return missing("online endpoint", ep)
        refused = name_problem("deployment", dep) or self._deployment_refusal(data, ep)
        if refused is not None:
            return refused
        found = self.deployments.setdefault(ep, {})
        status = 200 if dep in found else 201
        props = {k: v for k, v in data["properties"].items() if k not in READ_ONLY}
        resource = {
            "id": f"{self.ws_path}/onlineEndpoints/{ep}/deployments/{dep}",
            "name": dep,
            "type": f"{TYPE}/deployments",
            "location": self.location,
            "tags": data.get("tags") or {},
            "sku": data.get("sku") or {"name": "Default", "capacity": 1},
            "properties": {
                **DEPLOYMENT_DEFAULTS,
                **props,
                "provisioningState": "Creating" if status == 201 else "Updating",
            },
        }
        found[dep] = resource
        snapshot = copy.deepcopy(resource)
        headers = self.operation(
            lambda: self._run_container(ep, dep, snapshot), lambda e: _settle(resource, e)
        )
        return status, headers, resource

    def _deployment_refusal(self, data: Any, ep: str) -> Answer | None:
        problems = body_problems("OnlineDeployment", data)
        if problems:
            return invalid(problems)
        props = data["properties"]
        problem = None
        if props["endpointComputeType"] != "Managed":
            problem = "A managed online endpoint takes only Managed deployments."
        elif not props.get("instanceType"):
            problem = "A managed online deployment needs an instanceType."
        elif props.get("environmentId") not in self.environments:
            problem = f"Environment {props.get('environmentId')} does not exist."
        elif (data.get("sku") or {}).get("capacity", 1) < 1:
            problem = "The instance count (sku.capacity) must be at least 1."
        if problem is not None:
            return arm_error(400, "BadArgument", problem)
        why = self.busy(ep)
        return None if why is None else _conflict(ep, why)

    def _run_container(self, ep: str, dep: str, resource: dict[str, Any]) -> str | None:
        key = f"{ep}/{dep}"
        deadline = time.monotonic() + self.starve_seconds
        while key in self.starving:
            if dep not in self.deployments.get(ep, {}):
                return "Canceled: the deployment was deleted."
            if time.monotonic() >= deadline:
                return (
                    f"The readiness probe of deployment {dep} failed: the user "
                    "container did not become ready in time."
                )
            time.sleep(0.02)
        if dep not in self.deployments.get(ep, {}):
            return "Canceled: the deployment was deleted."
        return self.on_deployment(ep, dep, resource)

    def _get_deployment(self, data: Any, ep: str, dep: str) -> Answer:
        found = self.deployments.get(ep, {}).get(dep)
        return (200, {}, found) if found else missing("online deployment", f"{ep}/{dep}")

    def _get_deployments(self, data: Any, ep: str) -> Answer:
        if ep not in self.endpoints:
            return missing("online endpoint", ep)
        return 200, {}, {"value": list(self.deployments.get(ep, {}).values())}

    def _delete_deployment(self, data: Any, ep: str, dep: str) -> Answer:
        found = self.deployments.get(ep, {}).get(dep)
        if found is None:
            return 204, {}, None
        props = self.endpoints[ep]["properties"]
        share = (props.get("traffic") or {}).get(dep, 0) or (props.get("mirrorTraffic") or {}).get(
            dep, 0
        )
        if share:
            return arm_error(
                400,
                "BadArgument",
                f"Deployment {dep} takes {share}% of endpoint "
                f"{ep}'s traffic: set its traffic to 0 before deleting it.",
            )
        # Deleting a deployment still being created cancels it; any other operation on
        # the endpoint makes it wait.
        if (why := self.busy(ep, ignore=dep)) is not None:
            return _conflict(ep, why)
        found["properties"]["provisioningState"] = "Deleting"

        def done(error: str | None) -> None:
            self.deployments.get(ep, {}).pop(dep, None)

        stop = lambda: self.on_deployment_deleted(ep, dep)  # noqa: E731
        return 202, self.operation(stop, done, delete=True), None


def _settle(resource: dict[str, Any], error: str | None) -> None:
    resource["properties"]["provisioningState"] = "Succeeded" if error is None else "Failed"


def _conflict(ep: str, why: str) -> Answer:
    return arm_error(
        409,
        "Conflict",
        f"Endpoint {ep} has an operation in progress ({why}); retry once it completes.",
    )
