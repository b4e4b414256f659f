"""A Vertex AI stand-in: the EndpointService, ModelService and Operations methods the GAPIC
clients call, served in process over gRPC (``tests/support/vertex_grpc.py``) so the real
clients, transports and long-running-operation pollers run unchanged.

What it does, following the Vertex AI API reference:

- **Requests are the SDK's own messages**, and every field its types document as
  "Required." must be set (INVALID_ARGUMENT naming the field); resource names must be
  ``projects/*/locations/*/endpoints/*`` (or ``models/*``) of the stand-in's project (by id
  or number) and region; endpoint ids, model ids, display names and labels follow
  Vertex's rules; a model takes either a predict route or the invoke prefix ``/*``, and a
  model with the invoke prefix deploys only to a dedicated endpoint.
- **Traffic splits** name deployed models the endpoint has and sum to 100; a deployed model
  with traffic cannot be undeployed, a deployed model cannot be deleted (FAILED_PRECONDITION),
  neither can an endpoint with deployed models; ids taken are ALREADY_EXISTS; unknown
  resources NOT_FOUND. Resource names come back with the project *number*, as Vertex's do.
- **Long-running operations** (create endpoint, upload model, deploy, undeploy, deletes) are
  answered as ``google.longrunning.Operations`` does: not done, then done with the response
  or the error; CancelOperation stops one. A deploy finishes once ``on_deploy`` (what runs
  the container) says it serves; a container that never answers (``starving``) fails the
  deploy after ``starve_seconds``, as Vertex reports a model server that never became ready.
- **Cloud Monitoring**: ``MetricService.ListTimeSeries`` answers with the calls the
  dedicated endpoints routed (``tests/support/vertex_monitoring.py``).
- **RESOURCE_EXHAUSTED** (quota) for the next ``throttle`` calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

from tests.support.vertex_grpc import Operations, Refusal, serve
from tests.support.vertex_methods import EndpointMethods
from tests.support.vertex_models import ModelMethods
from tests.support.vertex_monitoring import Observed

PROJECT, PROJECT_NUMBER, LOCATION = "bgserve-test", "123456789012", "europe-west4"
E = "google.cloud.aiplatform.v1.EndpointService"
M = "google.cloud.aiplatform.v1.ModelService"
O = "google.longrunning.Operations"  # noqa: E741
MS = "google.monitoring.v3.MetricService"


class VertexStandIn(EndpointMethods, ModelMethods):
    """The Vertex AI API of one project and region (module docstring); tests read its
    state directly."""

    def __init__(self, operation_seconds: float = 0.05, starve_seconds: float = 5.0) -> None:
        self.lock = threading.RLock()
        self.operations = Operations(self.lock, operation_seconds)
        self.starve_seconds = starve_seconds
        self.endpoints: dict[str, Any] = {}  # endpoint id -> Endpoint
        self.models: dict[str, Any] = {}  # model id -> Model
        self.busy: dict[str, set[str]] = {}  # endpoint id -> deployed ids being deployed
        self.starving: set[str] = set()  # "endpoint/deployed id" whose container never serves
        self.throttle, self.throttled = 0, 0
        self.refused: list[tuple[str, str]] = []  # method, status name
        self.on_deploy: Callable[[str, str, Any], str | None] = lambda e, d, m: None
        self.on_undeploy: Callable[[str, str], None] = lambda e, d: None
        self.on_endpoint: Callable[[str], str] = self.default_dns
        self.on_endpoint_deleted: Callable[[str], None] = lambda e: None
        self.monitoring = Observed(PROJECT, LOCATION, (PROJECT_NUMBER,))
        self.server, self.address = serve(self._services(), self._guard)

    # ----- what tests use -----

    def clients(self, credentials: Any = None) -> Any:
        """The backend's GAPIC clients (Cloud Monitoring's too), their gRPC transports on
        the stand-in's channel."""
        from google.cloud import aiplatform_v1, monitoring_v3
        from google.cloud.aiplatform_v1.services.endpoint_service.transports.grpc import (
            EndpointServiceGrpcTransport,
        )
        from google.cloud.aiplatform_v1.services.model_service.transports.grpc import (
            ModelServiceGrpcTransport,
        )
        from google.cloud.monitoring_v3.services.metric_service.transports.grpc import (
            MetricServiceGrpcTransport,
        )

        from bgserve.cloud.vertex.google import VertexClients

        channel = grpc.insecure_channel(self.address)
        endpoints = aiplatform_v1.EndpointServiceClient(
            transport=EndpointServiceGrpcTransport(channel=channel)
        )
        models = aiplatform_v1.ModelServiceClient(
            transport=ModelServiceGrpcTransport(channel=channel)
        )
        monitoring = monitoring_v3.MetricServiceClient(
            transport=MetricServiceGrpcTransport(channel=channel)
        )
        return VertexClients(endpoints, models, credentials, monitoring)

    def settings(self, **extra: Any) -> dict[str, Any]:
        """The flat settings of a Vertex AI backend on the stand-in."""
        return {
            "backend": "vertex",
            "vertex_project": PROJECT,
            "vertex_location": LOCATION,
            "vertex_image": f"{LOCATION}-docker.pkg.dev/{PROJECT}/bgserve/bgserve:0.1.0",
            "vertex_poll_seconds": 0.02,
            "vertex_api_endpoint": self.address,
            "vertex_dns_scheme": "http",
            **extra,
        }

    def left(self) -> dict[str, list[str]]:
        """Every endpoint, deployed model (``endpoint/id``) and model that exists."""
        with self.lock:
            deployed = [
                f"{e}/{d.id}" for e, ep in self.endpoints.items() for d in ep.deployed_models
            ]
            return {
                "endpoints": sorted(self.endpoints),
                "deployed": sorted(deployed),
                "models": sorted(self.models),
            }

    def split(self, endpoint_id: str) -> dict[str, int]:
        with self.lock:
            found = self.endpoints.get(endpoint_id)
            return dict(found.traffic_split) if found is not None else {}

    def take_down(self, endpoint_id: str, deployed_id: str) -> None:
        """The deployed model's replicas fail: Vertex reports none available."""
        with self.lock:
            for deployed in self.endpoints[endpoint_id].deployed_models:
                if deployed.id == deployed_id:
                    deployed.status.available_replica_count = 0

    def close(self) -> None:
        self.server.stop(0)

    @staticmethod
    def default_dns(endpoint_id: str) -> str:
        return f"{endpoint_id}.{LOCATION}-{PROJECT_NUMBER}.prediction.vertexai.goog"

    # ----- plumbing -----

    def _guard(self, method: str, context: grpc.ServicerContext) -> None:
        with self.lock:
            if self.throttle > 0:
                self.throttle -= 1
                self.throttled += 1
                raise Refusal(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "Quota exceeded for quota metric 'Resource management (CRUD) requests' and "
                    "limit 'Resource management (CRUD) requests per minute per region' of "
                    "service 'aiplatform.googleapis.com'.",
                )

    def _services(self) -> dict[str, Any]:
        from google.cloud import aiplatform_v1 as v
        from google.cloud import monitoring_v3 as mon
        from google.longrunning import operations_pb2 as ops
        from google.protobuf import empty_pb2

        return {
            E: {
                "CreateEndpoint": (
                    self._logged(self.create_endpoint),
                    v.CreateEndpointRequest,
                    ops.Operation,
                ),
                "GetEndpoint": (self._logged(self.get_endpoint), v.GetEndpointRequest, v.Endpoint),
                "UpdateEndpoint": (
                    self._logged(self.update_endpoint),
                    v.UpdateEndpointRequest,
                    v.Endpoint,
                ),
                "DeleteEndpoint": (
                    self._logged(self.delete_endpoint),
                    v.DeleteEndpointRequest,
                    ops.Operation,
                ),
                "DeployModel": (
                    self._logged(self.deploy_model),
                    v.DeployModelRequest,
                    ops.Operation,
                ),
                "UndeployModel": (
                    self._logged(self.undeploy_model),
                    v.UndeployModelRequest,
                    ops.Operation,
                ),
            },
            M: {
                "UploadModel": (
                    self._logged(self.upload_model),
                    v.UploadModelRequest,
                    ops.Operation,
                ),
                "GetModel": (self._logged(self.get_model), v.GetModelRequest, v.Model),
                "DeleteModel": (
                    self._logged(self.delete_model),
                    v.DeleteModelRequest,
                    ops.Operation,
                ),
            },
            MS: {
                "ListTimeSeries": (
                    self._logged(self.monitoring.list_time_series),
                    mon.ListTimeSeriesRequest,
                    mon.ListTimeSeriesResponse,
                ),
            },
            O: {
                "GetOperation": (self.operations.get, ops.GetOperationRequest, ops.Operation),
                "CancelOperation": (
                    self.operations.cancel,
                    ops.CancelOperationRequest,
                    empty_pb2.Empty,
                ),
            },
        }

    def _logged(self, handler: Callable[[Any], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
        def answer(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                with self.lock:
                    return handler(request)
            except Refusal as refused:
                self.refused.append((handler.__name__, refused.code.name))
                raise

        return answer
