"""What Azure ML runs behind the stand-in's API: the containers and the scoring endpoints.

- :class:`ContainerHost` starts a real slot process for every deployment Azure provisions,
  as Azure starts the environment's image: the slot's arguments come from the deployment's
  environment variables through :func:`bgserve.slot.sagemaker.slot_argv` (the image's
  ``serve``), and the deployment succeeds only once the environment's readiness route
  answers 200 on the slot. A deleted deployment's slot (and an endpoint's) is stopped.
- :class:`ScoringHost` serves each endpoint's scoring URI (``POST /score``) on a loopback
  port of its own, as Azure does: a call must carry one of the endpoint's keys as a bearer
  token (else 401); ``azureml-model-deployment`` names the deployment to call (404 for one
  the endpoint does not have), else one is picked by the endpoint's ``traffic`` map (503
  when nothing is routed). The body goes to the deployment's slot at the environment's
  scoring route, and the answer says which deployment answered in
  ``azureml-model-deployment``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx

from bgserve.slot.sagemaker import DEPLOYMENT_ENV, MODEL_URI_ENV, RELEASE_ID_ENV, slot_argv
from tests.support.azureml import AzureMLStandIn
from tests.support.json_handler import JsonHandler, LoopbackServers
from tests.support.kube import SlotProcesses
from tests.support.sagemaker_platform import _pick as pick_by_weight

HEADER = "azureml-model-deployment"


class ContainerHost:
    """Real slot processes for the stand-in's deployments (see the module docstring)."""

    def __init__(self, stand_in: AzureMLStandIn, slots: SlotProcesses) -> None:
        self.stand_in = stand_in
        self.slots = slots
        # (endpoint, deployment) -> the slot's scoring URL and its (deployment, release id)
        self.running: dict[tuple[str, str], tuple[str, tuple[str, int]]] = {}
        self.lock = threading.Lock()
        stand_in.on_deployment = self.deploy
        stand_in.on_deployment_deleted = self.delete
        stand_in.on_endpoint_deleted = lambda ep: self._stop(lambda where: where[0] == ep)

    def deploy(self, endpoint: str, name: str, resource: dict[str, Any]) -> str | None:
        props = resource["properties"]
        env = props.get("environmentVariables") or {}
        if slot_argv(env) is None:
            return f"deployment {name}'s environment names no slot (BGSERVE_SLOT_MODEL_URI)"
        routes = self.stand_in.environments[props["environmentId"]]["properties"]
        routes = routes["inferenceConfig"]
        key = (env[DEPLOYMENT_ENV], int(env[RELEASE_ID_ENV]))
        url = self.slots.start(*key, env[MODEL_URI_ENV], extra=["--sagemaker"])
        ready = httpx.get(url + routes["readinessRoute"]["path"], timeout=30)
        if ready.status_code != 200:
            return f"the readiness route answered {ready.status_code}"
        with self.lock:
            self.running[(endpoint, name)] = (url + routes["scoringRoute"]["path"], key)
        return None

    def delete(self, endpoint: str, name: str) -> None:
        self._stop(lambda where: where == (endpoint, name))

    def _stop(self, gone: Callable[[tuple[str, str]], bool]) -> None:
        with self.lock:
            stopped = [self.running.pop(w)[1] for w in list(self.running) if gone(w)]
        for deployment, release_id in stopped:
            self.slots.stop(deployment, release_id)

    def url(self, endpoint: str, name: str) -> str | None:
        with self.lock:
            found = self.running.get((endpoint, name))
        return found[0] if found else None


class ScoringHost:
    """Each endpoint's scoring URI on a loopback port (see the module docstring)."""

    def __init__(self, stand_in: AzureMLStandIn, host: ContainerHost) -> None:
        self.stand_in, self.host = stand_in, host
        self.servers = LoopbackServers()
        self.invoked: list[tuple[str, str]] = []  # (endpoint, deployment) of answered calls
        self.refused: list[int] = []
        stand_in.on_endpoint = self.serve
        stop_slots = stand_in.on_endpoint_deleted

        def deleted(endpoint: str) -> None:
            stop_slots(endpoint)
            self._shut(endpoint)

        stand_in.on_endpoint_deleted = deleted

    def serve(self, endpoint: str) -> str:
        port = self.servers.start(endpoint, self._handler(endpoint))
        return f"http://127.0.0.1:{port}/score"

    def close(self) -> None:
        self.servers.close()

    def _shut(self, endpoint: str) -> None:
        self.servers.stop(endpoint)

    def score(self, endpoint: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        """One call of ``endpoint``'s scoring URI: status and the body (bytes or JSON)."""
        with self.stand_in.lock:
            keys = self.stand_in.keys.get(endpoint, ())
            traffic = dict(self.stand_in.traffic(endpoint))
            names = set(self.stand_in.deployments.get(endpoint, {}))
        if headers.get("authorization", "").removeprefix("Bearer ") not in keys:
            self.refused.append(401)
            return 401, {"message": "Key based authentication failed: no valid key given."}
        name = headers.get(HEADER) or pick_by_weight({n: float(w) for n, w in traffic.items()})
        if not name:
            self.refused.append(503)
            return 503, {"message": f"No deployment takes traffic on endpoint {endpoint}."}
        if name not in names:
            self.refused.append(404)
            return 404, {"message": f"No deployment {name!r} on endpoint {endpoint}."}
        target = self.host.url(endpoint, name)
        if target is None:
            self.refused.append(503)
            return 503, {"message": f"Deployment {name} has no instance serving."}
        answer = httpx.post(
            target, content=body, headers={"content-type": "application/json"}, timeout=60
        )
        self.invoked.append((endpoint, name))
        self.stand_in.monitor.observe(endpoint, name, answer.status_code)
        return answer.status_code, (name, answer.content)

    def _handler(self, endpoint: str) -> type[JsonHandler]:
        scoring = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if self.path != "/score":
                    self.send_json(404, {"message": f"no route {self.path}"})
                    return
                status, answer = scoring.score(endpoint, headers, body)
                if isinstance(answer, dict):
                    self.send_json(status, answer)
                    return
                name, data = answer
                self.send_response(status)
                for key, value in (
                    ("content-type", "application/json"),
                    (HEADER, name),
                    ("content-length", str(len(data))),
                ):
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler
