"""The Vertex AI stand-in's ModelService methods (see :mod:`tests.support.vertex` for the
rules they keep), mixed into the stand-in beside its endpoint methods."""

from __future__ import annotations

import random
import re
from typing import Any

import grpc

from tests.support import vertex_rules as rules
from tests.support.vertex_grpc import Operations, Refusal
from tests.support.vertex_methods import NamedResources, invalid


class ModelMethods(NamedResources):
    """UploadModel, GetModel and DeleteModel."""

    operations: Operations
    endpoints: dict[str, Any]
    models: dict[str, Any]

    def upload_model(self, request: Any) -> Any:
        from google.cloud.aiplatform_v1 import (
            Model,
            UploadModelOperationMetadata,
            UploadModelResponse,
        )

        invalid(rules.missing_fields(request))
        self._name(request.parent, None, "parent")
        model_id = request.model_id or str(random.randrange(10**18, 10**19))
        if not rules.MODEL_ID.fullmatch(model_id) and not re.fullmatch(r"[0-9]{19}", model_id):
            invalid(
                [
                    f"model_id {model_id!r} is invalid: at most 63 of [a-z0-9_-], not starting "
                    "with a digit or '-'"
                ]
            )
        wanted = request.model
        if "container_spec" not in wanted:
            invalid(["model.container_spec is required for a custom container model"])
        invalid(
            rules.display_name_problems(wanted.display_name, "model")
            + rules.label_problems(wanted.labels, "model")
            + rules.container_problems(wanted)
        )
        if model_id in self.models:
            raise Refusal(grpc.StatusCode.ALREADY_EXISTS, f"Model {model_id} already exists.")
        name = self._full("models", model_id)

        def done() -> Any:
            self.models[model_id] = Model(wanted, name=name, version_id="1")
            return UploadModelResponse(model=name, model_version_id="1")

        return self.operations.start(
            name, lambda c: None, done, UploadModelOperationMetadata()
        ).as_proto()

    def get_model(self, request: Any) -> Any:
        from google.cloud.aiplatform_v1 import Model

        invalid(rules.missing_fields(request))
        return Model(self._model(request.name, "name"))

    def delete_model(self, request: Any) -> Any:
        from google.cloud.aiplatform_v1 import DeleteOperationMetadata

        invalid(rules.missing_fields(request))
        model = self._model(request.name, "name")
        users = [
            e.name
            for e in self.endpoints.values()
            for d in e.deployed_models
            if d.model == model.name
        ]
        if users:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Model {model.name} is deployed to {', '.join(users)}: undeploy it first.",
            )

        def done() -> Any:
            from google.protobuf import empty_pb2

            self.models.pop(self._name(request.name, "models", "name"), None)
            return empty_pb2.Empty()

        return self.operations.start(
            model.name, lambda c: None, done, DeleteOperationMetadata()
        ).as_proto()
