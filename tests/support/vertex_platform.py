"""What Vertex AI runs behind the stand-in's API: the containers and the dedicated endpoints.

- :class:`ContainerHost` starts a real slot process for every model Vertex deploys, as
  Vertex starts the container: the slot's arguments come from the model's container
  environment through :func:`bgserve.slot.sagemaker.slot_argv` (the image's ``serve``), and
  the deploy finishes only once the model's health route answers 200. An undeployed
  model's slot is stopped.
- :class:`DedicatedHost` serves each dedicated endpoint's DNS name on a loopback port of its
  own: ``POST /v1/<endpoint>/invoke/<path>`` goes to a deployed model the traffic split
  picks (503 when nothing is routed), ``POST /v1/<endpoint>/deployedModels/<id>/invoke/
  <path>`` to that deployed model whatever the split (404 for one the endpoint does not
  have); both need a bearer token (401), need the model's invoke prefix, and answer with
  ``X-Vertex-AI-Deployed-Model-Id`` naming who answered. Every call a deployed model
  answered is counted in the stand-in's Cloud Monitoring (status and time taken).
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import httpx

from bgserve.slot.sagemaker import DEPLOYMENT_ENV, MODEL_URI_ENV, RELEASE_ID_ENV, slot_argv
from tests.support.json_handler import JsonHandler, LoopbackServers
from tests.support.kube import SlotProcesses
from tests.support.sagemaker_platform import _pick as pick_by_weight
from tests.support.vertex import VertexStandIn

HEADER = "X-Vertex-AI-Deployed-Model-Id"
_INVOKE = re.compile(
    r"/v1/projects/[^/]+/locations/[^/]+/endpoints/(?P<ep>[^/]+)(?:/deployedModels/(?P<id>[0-9]+))?/invoke(?P<path>/.+)"
)


class ContainerHost:
    """Real slot processes for the stand-in's deployed models (module docstring)."""

    def __init__(self, stand_in: VertexStandIn, slots: SlotProcesses) -> None:
        self.stand_in, self.slots = stand_in, slots
        self.running: dict[tuple[str, str], tuple[str, tuple[str, int]]] = {}
        self.lock = threading.Lock()
        stand_in.on_deploy = self.deploy
        stand_in.on_undeploy = self.undeploy

    def deploy(self, endpoint: str, deployed_id: str, model: Any) -> str | None:
        spec = model.container_spec
        env = {e.name: e.value for e in spec.env}
        if slot_argv(env) is None:
            return f"model {model.name}'s environment names no slot (BGSERVE_SLOT_MODEL_URI)"
        key = (env[DEPLOYMENT_ENV], int(env[RELEASE_ID_ENV]))
        url = self.slots.start(*key, env[MODEL_URI_ENV], extra=["--sagemaker"])
        health = httpx.get(url + spec.health_route, timeout=30)
        if health.status_code != 200:
            return (
                f"Model server never became ready: the health route answered {health.status_code}."
            )
        with self.lock:
            self.running[(endpoint, deployed_id)] = (url, key)
        return None

    def undeploy(self, endpoint: str, deployed_id: str) -> None:
        with self.lock:
            found = self.running.pop((endpoint, deployed_id), None)
        if found is not None:
            self.slots.stop(*found[1])

    def url(self, endpoint: str, deployed_id: str) -> str | None:
        with self.lock:
            found = self.running.get((endpoint, deployed_id))
        return found[0] if found else None


class DedicatedHost:
    """Each dedicated endpoint's DNS name on a loopback port (module docstring)."""

    def __init__(self, stand_in: VertexStandIn, host: ContainerHost, token: str) -> None:
        self.stand_in, self.host, self.token = stand_in, host, token
        self.servers = LoopbackServers()
        self.invoked: list[tuple[str, str, str]] = []  # endpoint, deployed id, path answered
        self.refused: list[int] = []
        stand_in.on_endpoint = self.serve
        stand_in.on_endpoint_deleted = self._shut

    def serve(self, endpoint: str) -> str:
        port = self.servers.start(endpoint, self._handler(endpoint))
        return f"127.0.0.1:{port}"

    def close(self) -> None:
        self.servers.close()

    def _shut(self, endpoint: str) -> None:
        self.servers.stop(endpoint)

    def invoke(
        self, endpoint: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        """One call of the endpoint's invoke API: status and (deployed id, body) or JSON."""
        match = _INVOKE.fullmatch(path)
        if match is None or match["ep"] != endpoint:
            return self._refuse(404, f"No route {path} on endpoint {endpoint}.")
        if headers.get("authorization") != f"Bearer {self.token}":
            return self._refuse(401, "Request had invalid authentication credentials.")
        with self.stand_in.lock:
            split = dict(self.stand_in.split(endpoint))
            deployed = {d.id: d.model for d in self.stand_in.endpoints[endpoint].deployed_models}
        chosen = match["id"] or pick_by_weight({k: float(v) for k, v in split.items()})
        if not chosen:
            return self._refuse(503, f"Endpoint {endpoint} routes no traffic.")
        if chosen not in deployed:
            return self._refuse(404, f"DeployedModel {chosen} not found on endpoint {endpoint}.")
        model = self.stand_in.models[deployed[chosen].rsplit("/", 1)[1]]
        if model.container_spec.invoke_route_prefix != "/*":
            return self._refuse(400, "The model was not uploaded with an invoke route prefix.")
        target = self.host.url(endpoint, chosen)
        if target is None:
            return self._refuse(503, f"DeployedModel {chosen} has no replica serving.")
        started = time.monotonic()
        answer = httpx.post(
            target + match["path"],
            content=body,
            headers={"content-type": "application/json"},
            timeout=60,
        )
        taken_ms = (time.monotonic() - started) * 1000
        self.stand_in.monitoring.record(endpoint, chosen, answer.status_code, taken_ms)
        self.invoked.append((endpoint, chosen, match["path"]))
        return answer.status_code, (chosen, answer.content)

    def _refuse(self, status: int, message: str) -> tuple[int, Any]:
        self.refused.append(status)
        return status, {"error": {"code": status, "message": message}}

    def _handler(self, endpoint: str) -> type[JsonHandler]:
        dedicated = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, answer = dedicated.invoke(endpoint, self.path, headers, body)
                if isinstance(answer, dict):
                    self.send_json(status, answer)
                    return
                deployed_id, data = answer
                self.send_response(status)
                for key, value in (
                    ("content-type", "application/json"),
                    (HEADER, deployed_id),
                    ("content-length", str(len(data))),
                ):
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler
