"""The Vertex AI stand-in's methods (see :mod:`tests.support.vertex` for the rules they
keep): each takes the SDK's request message under the stand-in's lock and returns the
response message, or raises a Refusal with the status Vertex answers."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import grpc

from tests.support import vertex_rules as rules
from tests.support.vertex_grpc import Operations, Refusal

_NUMBER = "123456789012"


def invalid(problems: list[str]) -> None:
    if problems:
        raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))


class NamedResources:
    """Resource names of the stand-in's project and region, and lookups by them."""

    endpoints: dict[str, Any]
    models: dict[str, Any]

    def _name(self, name: str, kind: str | None, field: str) -> str:
        """The id in a resource name of this project and region (INVALID_ARGUMENT else)."""
        from tests.support.vertex import LOCATION, PROJECT

        match = rules.NAME.fullmatch(name)
        ok = (
            match is not None
            and match["project"] in (PROJECT, _NUMBER)
            and match["location"] == LOCATION
        )
        if not ok or match is None or match["kind"] != kind:
            form = f"projects/*/locations/{LOCATION}" + (f"/{kind}/*" if kind else "")
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{field}: {name!r} is not a resource name of the form {form}",
            )
        return match["id"] or ""

    def _full(self, kind: str, resource_id: str) -> str:
        from tests.support.vertex import LOCATION

        return f"projects/{_NUMBER}/locations/{LOCATION}/{kind}/{resource_id}"

    def _endpoint(self, name: str, field: str = "name") -> Any:
        endpoint_id = self._name(name, "endpoints", field)
        found = self.endpoints.get(endpoint_id)
        if found is None:
            raise Refusal(grpc.StatusCode.NOT_FOUND, f"Endpoint `{name}` not found.")
        return found

    def _model(self, name: str, field: str) -> Any:
        model_id = self._name(name, "models", field)
        found = self.models.get(model_id)
        if found is None:
            raise Refusal(grpc.StatusCode.NOT_FOUND, f"Model `{name}` not found.")
        return found


class EndpointMethods(NamedResources):
    """CreateEndpoint, GetEndpoint, UpdateEndpoint, DeleteEndpoint, DeployModel and
    UndeployModel (mixed into the stand-in)."""

    lock: threading.RLock
    operations: Operations
    starve_seconds: float
    busy: dict[str, set[str]]
    starving: set[str]
    on_deploy: Callable[[str, str, Any], str | None]
    on_undeploy: Callable[[str, str], None]
    on_endpoint: Callable[[str], str]
    on_endpoint_deleted: Callable[[str], None]

    # ----- endpoints -----

    def create_endpoint(self, request: Any) -> Any:
        from google.cloud.aiplatform_v1 import CreateEndpointOperationMetadata, Endpoint

        invalid(rules.missing_fields(request))
        self._name(request.parent, None, "parent")
        endpoint_id = request.endpoint_id or str(random.randrange(10**8, 10**9))
        wanted = request.endpoint
        invalid(
            (
                []
                if rules.ENDPOINT_ID.fullmatch(endpoint_id)
                else [
                    f"endpoint_id {endpoint_id!r} is invalid: a lowercase letter, then at most 62 "
                    "lowercase letters, digits and '-', ending with a letter or digit"
                ]
            )
            + rules.display_name_problems(wanted.display_name, "endpoint")
            + rules.label_problems(wanted.labels, "endpoint")
            + (
                ["endpoint.traffic_split must be empty: the endpoint has no deployed model"]
                if wanted.traffic_split
                else []
            )
        )
        if endpoint_id in self.endpoints or endpoint_id in self.busy:
            raise Refusal(grpc.StatusCode.ALREADY_EXISTS, f"Endpoint {endpoint_id} already exists.")
        self.busy[endpoint_id] = set()

        def done() -> Any:
            made = Endpoint(wanted, name=self._full("endpoints", endpoint_id), deployed_models=[])
            if made.dedicated_endpoint_enabled:
                made.dedicated_endpoint_dns = self.on_endpoint(endpoint_id)
            self.endpoints[endpoint_id] = made
            return made

        op = self.operations.start(
            self._full("endpoints", endpoint_id),
            lambda c: None,
            done,
            CreateEndpointOperationMetadata(),
        )
        return op.as_proto()

    def get_endpoint(self, request: Any) -> Any:
        from google.cloud.aiplatform_v1 import Endpoint

        invalid(rules.missing_fields(request))
        return Endpoint(self._endpoint(request.name))

    def update_endpoint(self, request: Any) -> Any:
        from google.cloud.aiplatform_v1 import Endpoint

        invalid(rules.missing_fields(request))
        found = self._endpoint(request.endpoint.name, "endpoint.name")
        paths = list(request.update_mask.paths)
        invalid(
            [
                f"update_mask path {p!r} cannot be updated"
                for p in paths
                if p not in rules.ENDPOINT_PATHS
            ]
        )
        wanted = request.endpoint
        deployed = [d.id for d in found.deployed_models]
        problems = (
            rules.display_name_problems(wanted.display_name, "endpoint")
            if "display_name" in paths
            else []
        )
        if "traffic_split" in paths:
            problems += rules.split_problems(wanted.traffic_split, deployed)
            if not wanted.traffic_split and deployed:
                problems.append("traffic_split percents must add up to 100, got 0")
        invalid(
            problems
            + (rules.label_problems(wanted.labels, "endpoint") if "labels" in paths else [])
        )
        for path in paths:
            setattr(found, path, getattr(wanted, path))
        return Endpoint(found)

    def delete_endpoint(self, request: Any) -> Any:
        from google.cloud.aiplatform_v1 import DeleteOperationMetadata

        invalid(rules.missing_fields(request))
        found = self._endpoint(request.name)
        endpoint_id = self._name(request.name, "endpoints", "name")
        if found.deployed_models or self.busy.get(endpoint_id):
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Endpoint {request.name} has deployed models: undeploy them first.",
            )

        def done() -> Any:
            from google.protobuf import empty_pb2

            self.endpoints.pop(endpoint_id, None)
            self.busy.pop(endpoint_id, None)
            self.on_endpoint_deleted(endpoint_id)
            return empty_pb2.Empty()

        return self.operations.start(
            found.name, lambda c: None, done, DeleteOperationMetadata()
        ).as_proto()

    # ----- deploy and undeploy -----

    def deploy_model(self, request: Any) -> Any:
        from google.cloud.aiplatform_v1 import DeployModelOperationMetadata

        invalid(rules.missing_fields(request))
        found = self._endpoint(request.endpoint, "endpoint")
        endpoint_id = self._name(request.endpoint, "endpoints", "endpoint")
        deployed = request.deployed_model
        model = self._model(deployed.model, "deployed_model.model")
        deployed_id = deployed.id or str(random.randrange(10**9, 10**10))
        taken = {d.id for d in found.deployed_models} | self.busy.get(endpoint_id, set())
        invalid(
            (
                []
                if rules.DEPLOYED_ID.fullmatch(deployed_id)
                else [f"deployed_model.id {deployed_id!r} must be 1-10 digits"]
            )
            + rules.display_name_problems(deployed.display_name or "x", "deployed_model")
            + rules.resource_problems(deployed)
            + rules.split_problems(
                request.traffic_split, [d.id for d in found.deployed_models], new=True
            )
        )
        if model.container_spec.invoke_route_prefix and not found.dedicated_endpoint_enabled:
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                "A model with invoke_route_prefix can only be deployed to a dedicated endpoint.",
            )
        if deployed_id in taken:
            raise Refusal(
                grpc.StatusCode.ALREADY_EXISTS,
                f"DeployedModel {deployed_id} already exists on {found.name}.",
            )
        self.busy.setdefault(endpoint_id, set()).add(deployed_id)
        work = self._deploy_work(endpoint_id, deployed_id, model)
        return self.operations.start(
            found.name,
            work,
            self._deployed(endpoint_id, deployed_id, request, model),
            DeployModelOperationMetadata(),
        ).as_proto()

    def _deploy_work(self, endpoint_id: str, deployed_id: str, model: Any) -> Any:
        def work(cancelled: threading.Event) -> str | None:
            if f"{endpoint_id}/{deployed_id}" in self.starving:
                cancelled.wait(self.starve_seconds)
                error: str | None = (
                    "Model server never became ready. Please validate that your model file "
                    "or container configuration are valid."
                )
            else:
                error = self.on_deploy(endpoint_id, deployed_id, model)
            if error is not None or cancelled.is_set():
                self.busy.get(endpoint_id, set()).discard(deployed_id)
                self.on_undeploy(endpoint_id, deployed_id)
            return error

        return work

    def _deployed(self, endpoint_id: str, deployed_id: str, request: Any, model: Any) -> Any:
        from google.cloud.aiplatform_v1 import DeployedModel, DeployModelResponse

        def done() -> Any:
            self.busy.get(endpoint_id, set()).discard(deployed_id)
            endpoint = self.endpoints[endpoint_id]
            made = DeployedModel(request.deployed_model, id=deployed_id, model=model.name)
            made.status.available_replica_count = made.dedicated_resources.min_replica_count
            endpoint.deployed_models.append(made)
            if request.traffic_split:
                split = dict(request.traffic_split)
                split[deployed_id] = split.pop("0", split.get(deployed_id, 0))
                endpoint.traffic_split = split
            return DeployModelResponse(deployed_model=made)

        return done

    def undeploy_model(self, request: Any) -> Any:
        from google.cloud.aiplatform_v1 import UndeployModelOperationMetadata, UndeployModelResponse

        invalid(rules.missing_fields(request))
        found = self._endpoint(request.endpoint, "endpoint")
        endpoint_id = self._name(request.endpoint, "endpoints", "endpoint")
        deployed_id = request.deployed_model_id
        if deployed_id not in {d.id for d in found.deployed_models}:
            raise Refusal(
                grpc.StatusCode.NOT_FOUND, f"DeployedModel {deployed_id} not found on {found.name}."
            )
        split = dict(request.traffic_split) or dict(found.traffic_split)
        if split.get(deployed_id, 0) > 0:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"DeployedModel {deployed_id} has {split[deployed_id]}% of the endpoint's traffic: "
                "assign it to other deployed models first.",
            )

        def done() -> Any:
            kept = [d for d in found.deployed_models if d.id != deployed_id]
            del found.deployed_models[:]
            found.deployed_models.extend(kept)
            found.traffic_split = (
                {k: v for k, v in split.items() if k != deployed_id} if kept else {}
            )
            self.on_undeploy(endpoint_id, deployed_id)
            return UndeployModelResponse()

        return self.operations.start(
            found.name, lambda c: None, done, UndeployModelOperationMetadata()
        ).as_proto()
