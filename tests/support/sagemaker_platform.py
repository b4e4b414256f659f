"""What SageMaker runs behind the stand-in's API: the containers and the runtime.

- :class:`ContainerHost` starts a real slot process for every variant that goes live, as
  SageMaker starts the model's image with ``serve``: the slot's arguments come from the
  model's container environment through :func:`bgserve.slot.sagemaker.slot_argv` (the
  slot answers SageMaker's contract, ``/ping`` and ``/invocations``), and the endpoint
  stays Creating/Updating until every new slot answers ready. A deleted endpoint's slots,
  and those of variants an update dropped, are stopped.
- :class:`Runtime` answers InvokeEndpoint (``POST /endpoints/<name>/invocations``) as the
  SageMaker runtime does: it refuses a call whose SigV4 signature does not verify (checked
  with botocore's signer over the request as received), picks the variant named by
  ``X-Amzn-SageMaker-Target-Variant`` or else one by the variants' current weights,
  forwards the body to that variant's ``/invocations`` and says which variant answered
  in ``X-Amzn-Invoked-Production-Variant``. A model's non-2xx answer is a 424 ModelError.
  Every call the model answers is published to the stand-in's CloudWatch as SageMaker
  does (``AWS/SageMaker``, per endpoint and variant: Invocations, Invocation5XXErrors,
  Invocation4XXErrors, ModelLatency in microseconds).
"""

from __future__ import annotations

import hmac
import json
import random
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from bgserve.slot.sagemaker import DEPLOYMENT_ENV, MODEL_URI_ENV, RELEASE_ID_ENV, slot_argv
from tests.support.kube import SlotProcesses
from tests.support.sagemaker import ACCOUNT, CREDENTIALS, REGION, SageMakerStandIn

Answer = tuple[int, dict[str, str], bytes]

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[^,]+), ?"
    r"Signature=(?P<signature>[0-9a-f]{64})\Z"
)
_INVOKE = re.compile(r"/endpoints/(?P<name>[^/]+)/invocations\Z")


class ContainerHost:
    """Real slot processes for the stand-in's live variants (see the module docstring)."""

    def __init__(self, stand_in: SageMakerStandIn, slots: SlotProcesses) -> None:
        self.stand_in = stand_in
        self.slots = slots
        # (endpoint, variant) -> the slot's URL and its (deployment, release id)
        self.running: dict[tuple[str, str], tuple[str, tuple[str, int]]] = {}
        self.lock = threading.Lock()
        stand_in.on_deploy = self.deploy
        stand_in.on_delete = self.delete

    def deploy(self, endpoint: str, variants: list[dict[str, Any]]) -> None:
        live = {v["VariantName"] for v in variants}
        for variant in variants:
            model = self.stand_in.models()[variant["ModelName"]]
            env = model.primary_container.get("Environment") or {}
            assert slot_argv(env) is not None, f"model {variant['ModelName']} names no slot"
            key = (env[DEPLOYMENT_ENV], int(env[RELEASE_ID_ENV]))
            url = self.slots.start(*key, env[MODEL_URI_ENV], extra=["--sagemaker"])
            with self.lock:
                self.running[(endpoint, variant["VariantName"])] = (url, key)
        self._stop(lambda where: where[0] == endpoint and where[1] not in live)

    def delete(self, endpoint: str) -> None:
        self._stop(lambda where: where[0] == endpoint)

    def _stop(self, gone: Callable[[tuple[str, str]], bool]) -> None:
        with self.lock:
            stopped = [self.running.pop(w)[1] for w in list(self.running) if gone(w)]
        for deployment, release_id in stopped:
            self.slots.stop(deployment, release_id)

    def url(self, endpoint: str, variant: str) -> str | None:
        with self.lock:
            found = self.running.get((endpoint, variant))
        return found[0] if found else None


def signature_problem(method: str, url: str, headers: dict[str, str], body: bytes) -> str | None:
    """Why a request's SigV4 signature does not verify for the stand-in's credentials,
    region and the ``sagemaker`` service; None when it does."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    found = _AUTH.fullmatch(headers.get("authorization", ""))
    if found is None:
        return "missing or malformed SigV4 Authorization header"
    if found["key"] != CREDENTIALS["aws_access_key_id"]:
        return f"unknown access key {found['key']}"
    if (found["region"], found["service"]) != (REGION, "sagemaker"):
        return f"signed for {found['region']}/{found['service']}, not {REGION}/sagemaker"
    signed = found["signed"].split(";")
    if "x-amz-date" not in signed or "host" not in signed:
        return "the signature must cover host and x-amz-date"
    missing = [h for h in signed if h not in headers]
    if missing:
        return f"signed headers missing from the request: {missing}"
    request = AWSRequest(method, url, data=body, headers={h: headers[h] for h in signed})
    request.context["timestamp"] = headers["x-amz-date"]
    signer = SigV4Auth(
        Credentials(CREDENTIALS["aws_access_key_id"], CREDENTIALS["aws_secret_access_key"]),
        "sagemaker",
        REGION,
    )
    to_sign = signer.string_to_sign(request, signer.canonical_request(request))
    expected = signer.signature(to_sign, request)
    if not hmac.compare_digest(expected, found["signature"]):
        return "the request signature does not match"
    return None


class Runtime:
    """The SageMaker runtime's InvokeEndpoint on a loopback port (module docstring)."""

    def __init__(self, stand_in: SageMakerStandIn, host: ContainerHost) -> None:
        self.stand_in = stand_in
        self.host = host
        self.invoked: list[tuple[str, str]] = []  # (endpoint, variant) of each answered call
        self._cloudwatch = stand_in.client("cloudwatch")
        self._lock = threading.Lock()  # one boto3 client, calls from the server's threads
        self.refused: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def invoke(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        """One call: status, headers and body of the answer."""
        found = _INVOKE.fullmatch(path)
        if found is None:
            return _error(404, "UnknownOperationException", f"no operation at {path}")
        url = f"http://{headers.get('host', '')}{path}"
        problem = signature_problem("POST", url, headers, body)
        if problem is not None:
            self.refused.append(problem)
            return _error(403, "InvalidSignatureException", problem)
        name = found["name"]
        endpoint = self.stand_in.state.endpoints.get(name)
        if endpoint is None or endpoint.endpoint_status not in ("InService", "Updating"):
            return _error(
                400, "ValidationError", f"Endpoint {name} of account {ACCOUNT} not found."
            )
        weights = {
            v["VariantName"]: float(v.get("CurrentWeight", 0.0))
            for v in endpoint.production_variants
        }
        variant = headers.get("x-amzn-sagemaker-target-variant") or _pick(weights)
        target = self.host.url(name, variant) if variant in weights else None
        if target is None:
            return _error(400, "ValidationError", f"The variant(s) [{variant}] are not present.")
        return self._forward(name, variant, target, headers, body)

    def _forward(
        self, name: str, variant: str, target: str, headers: dict[str, str], body: bytes
    ) -> Answer:
        content_type = headers.get("content-type", "application/json")
        started = time.perf_counter()
        answer = httpx.post(
            f"{target}/invocations",
            content=body,
            headers={"content-type": content_type},
            timeout=60,
        )
        self._publish(name, variant, answer.status_code, time.perf_counter() - started)
        if not 200 <= answer.status_code < 300:
            message = f"client error ({answer.status_code}) from the model: {answer.text[:500]}"
            return _error(424, "ModelError", message)
        self.invoked.append((name, variant))
        reply = {
            "content-type": answer.headers.get("content-type", "application/json"),
            "x-amzn-invoked-production-variant": variant,
        }
        return 200, reply, answer.content

    def _publish(self, endpoint: str, variant: str, status: int, seconds: float) -> None:
        """The call's metrics in CloudWatch, as SageMaker publishes them per variant."""
        dimensions = [
            {"Name": "EndpointName", "Value": endpoint},
            {"Name": "VariantName", "Value": variant},
        ]
        values = {
            "Invocations": 1.0,
            "Invocation5XXErrors": float(500 <= status < 600),
            "Invocation4XXErrors": float(400 <= status < 500),
            "ModelLatency": seconds * 1e6,  # microseconds, as SageMaker reports it
        }
        data = [
            {"MetricName": metric, "Dimensions": dimensions, "Value": value}
            for metric, value in values.items()
        ]
        with self._lock:
            self._cloudwatch.put_metric_data(Namespace="AWS/SageMaker", MetricData=data)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, reply, data = runtime.invoke(self.path, headers, body)
                self.send_response(status)
                for key, value in {**reply, "content-length": str(len(data))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _pick(weights: dict[str, float]) -> str:
    total = sum(weights.values())
    if total <= 0:
        return ""
    return random.choices(list(weights), weights=list(weights.values()))[0]


def _error(status: int, code: str, message: str) -> Answer:
    data = json.dumps({"__type": code, "message": message}).encode()
    return status, {"content-type": "application/x-amz-json-1.1", "x-amzn-errortype": code}, data
