"""A SageMaker stand-in: moto's SageMaker in server mode (in this process, so its state can
be read and a variant's instances taken down), reached through boto3 like AWS.

moto answers CreateModel, CreateEndpointConfig, CreateEndpoint, DescribeEndpoint and
UpdateEndpointWeightsAndCapacities from its own state. What it lacks or does otherwise is
added here on that same state, following the SageMaker API reference:

- **UpdateEndpoint** (moto: NotImplementedError): refused for a missing endpoint or config
  and while the endpoint is not InService ("Cannot update in-progress endpoint"); the
  endpoint is ``Updating`` for ``update_seconds``, then serves the new config's variants
  at the weights and instance counts the config gives.
- **CreateEndpoint** leaves the endpoint ``Creating`` for ``update_seconds`` (moto: at
  once), and refuses an endpoint that exists.
- **A weight of 0** in a config stays 0 (moto drops ``InitialVariantWeight: 0.0`` by a
  truthiness check).
- **UpdateEndpointWeightsAndCapacities** is refused while the endpoint is not InService,
  a variant whose ``DesiredInstanceCount`` is not sent keeps its count (moto wipes it), and
  instances out of service stay so (moto sets every current count to the desired one).
- **CreateModel and CreateEndpointConfig** refuse a name that exists (moto overwrites).
- **Instances that never come up**: a variant of a model in ``starving`` has no instance
  in service, as when its container fails SageMaker's health check.

boto3 itself validates every request against SageMaker's published service model before
it is sent (required fields, types, lengths), as it does against AWS.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any
from unittest import mock

from tests.support.processes import free_port

ACCOUNT = "123456789012"
REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class SageMakerStandIn:
    """moto's SageMaker on a loopback port with the additions in the module docstring."""

    def __init__(self, update_seconds: float = 0.2) -> None:
        self.update_seconds = update_seconds
        self.url = ""
        # Called as an endpoint's variants go live (create or update, before InService)
        # and when an endpoint is deleted: what runs the containers listens here.
        self.on_deploy: Callable[[str, list[dict[str, Any]]], None] = lambda name, v: None
        self.on_delete: Callable[[str], None] = lambda name: None
        # Models whose instances never pass their health check (no instance in service).
        self.starving: set[str] = set()
        # Creates and updates complete only while this is set (a test clears it to hold
        # an endpoint in Creating/Updating for as long as it needs).
        self.updates = threading.Event()
        self.updates.set()
        self._stack = ExitStack()
        self._timers: list[threading.Timer] = []

    def __enter__(self) -> SageMakerStandIn:
        from moto.server import ThreadedMotoServer

        self._patch()
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        self._stack.callback(server.stop)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.updates.set()
        for timer in self._timers:
            timer.cancel()
        self._stack.close()
        self.models().clear()
        self.state.endpoint_configs.clear()
        self.state.endpoints.clear()

    # ----- what tests read and do -----

    def session(self) -> Any:
        """A boto3 session with the stand-in's credentials and region."""
        import boto3

        return boto3.session.Session(region_name=REGION, **CREDENTIALS)

    def client(self, service: str = "sagemaker") -> Any:
        """A boto3 client of the stand-in."""
        return self.session().client(service, endpoint_url=self.url)

    def settings(self, **extra: Any) -> dict[str, Any]:
        """The flat settings of a SageMaker backend on the stand-in."""
        return {
            "backend": "sagemaker",
            "sagemaker_region": REGION,
            "sagemaker_endpoint_url": self.url,
            "sagemaker_role_arn": f"arn:aws:iam::{ACCOUNT}:role/bgserve-slots",
            "sagemaker_image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/bgserve:0.1.0",
            "sagemaker_poll_seconds": 0.02,
            **extra,
        }

    @property
    def state(self) -> Any:
        """moto's SageMaker backend for the stand-in's account and region."""
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends[ACCOUNT][REGION]

    def models(self) -> dict[str, Any]:
        models: dict[str, Any] = self.state._models
        return models

    def left(self) -> dict[str, list[str]]:
        """Every model, endpoint config and endpoint that exists (sorted names)."""
        return {
            "models": sorted(self.models()),
            "configs": sorted(self.state.endpoint_configs),
            "endpoints": sorted(self.state.endpoints),
        }

    def weights(self, endpoint: str) -> dict[str, float]:
        """Each variant's current weight on ``endpoint`` ({} when it does not exist)."""
        found = self.state.endpoints.get(endpoint)
        if found is None:
            return {}
        return {v["VariantName"]: v.get("CurrentWeight", 0.0) for v in found.production_variants}

    def take_down(self, endpoint: str, variant: str) -> None:
        """The variant's instances fail: none is in service (as while SageMaker replaces
        them)."""
        for summary in self.state.endpoints[endpoint].production_variants:
            if summary["VariantName"] == variant:
                summary["CurrentInstanceCount"] = 0

    def fail(self, endpoint: str, reason: str) -> None:
        """The endpoint fails as SageMaker reports a failed deployment."""
        found = self.state.endpoints[endpoint]
        found.endpoint_status = "Failed"
        found.failure_reason = reason

    # ----- the additions -----

    def _later(self, action: Callable[[], None]) -> None:
        def when_released() -> None:
            self.updates.wait()
            action()

        timer = threading.Timer(self.update_seconds, when_released)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _patch(self) -> None:
        from moto.core.responses import ActionResult
        from moto.sagemaker import models, responses
        from moto.sagemaker.exceptions import ValidationError

        stand_in = self
        backend_type = models.SageMakerModelBackend
        create_endpoint = backend_type.create_endpoint
        create_config = backend_type.create_endpoint_config
        create_model = backend_type.create_model
        delete_endpoint = backend_type.delete_endpoint
        update_weights = backend_type.update_endpoint_weights_and_capacities

        def in_service(backend: Any, name: str) -> Any:
            endpoint = backend.endpoints.get(name)
            if endpoint is None:
                arn = models.FakeEndpoint.arn_formatter(name, ACCOUNT, REGION)
                raise ValidationError(message=f'Could not find endpoint "{arn}".')
            if endpoint.endpoint_status != "InService":
                raise ValidationError(
                    message=f'Cannot update in-progress endpoint "{endpoint.arn}".'
                )
            return endpoint

        def keep_zero_weights(self: Any, variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
            processed = []
            for given in variants:
                summary = {"VariantName": given["VariantName"]}
                if given.get("InitialInstanceCount") is not None:
                    count = given["InitialInstanceCount"]
                    summary["CurrentInstanceCount"] = summary["DesiredInstanceCount"] = count
                if given.get("ModelName") in stand_in.starving:
                    summary["CurrentInstanceCount"] = 0
                weight = given.get("InitialVariantWeight")
                weight = 1.0 if weight is None else weight  # SageMaker's default
                summary["CurrentWeight"] = summary["DesiredWeight"] = weight
                processed.append(summary)
            return processed

        def create_endpoint_later(self: Any, endpoint_name: str, **kw: Any) -> Any:
            if endpoint_name in self.endpoints:
                raise ValidationError(message="Cannot create already existing endpoint.")
            endpoint = create_endpoint(self, endpoint_name=endpoint_name, **kw)
            endpoint.endpoint_status = "Creating"

            def created() -> None:
                config = self.endpoint_configs[endpoint.endpoint_config_name]
                stand_in.on_deploy(endpoint_name, config.production_variants)
                if endpoint.endpoint_status == "Creating":
                    endpoint.endpoint_status = "InService"

            stand_in._later(created)
            return endpoint

        def create_config_once(self: Any, endpoint_config_name: str, **kw: Any) -> Any:
            if endpoint_config_name in self.endpoint_configs:
                raise ValidationError(
                    message="Cannot create already existing endpoint configuration."
                )
            return create_config(self, endpoint_config_name=endpoint_config_name, **kw)

        def create_model_once(self: Any, model_name: str, **kw: Any) -> Any:
            if model_name in self._models:
                raise ValidationError(message="Cannot create already existing model.")
            return create_model(self, model_name=model_name, **kw)

        def delete_and_stop(self: Any, endpoint_name: str) -> None:
            delete_endpoint(self, endpoint_name)
            stand_in.on_delete(endpoint_name)

        def update_weights_in_service(
            self: Any, endpoint_name: str, desired_weights_and_capacities: list[dict[str, Any]]
        ) -> str:
            endpoint = in_service(self, endpoint_name)
            counts = {
                v["VariantName"]: v.get("DesiredInstanceCount")
                for v in endpoint.production_variants
            }
            filled = [
                {
                    **d,
                    "DesiredInstanceCount": d.get(
                        "DesiredInstanceCount", counts.get(d.get("VariantName"))
                    ),
                }
                for d in desired_weights_and_capacities
            ]
            current = {
                v["VariantName"]: v.get("CurrentInstanceCount")
                for v in endpoint.production_variants
            }
            arn: str = update_weights(self, endpoint_name, filled)
            for variant in endpoint.production_variants:  # moto sets them to desired at once
                variant["CurrentInstanceCount"] = current.get(variant["VariantName"])
            return arn

        def update_endpoint(self: Any) -> Any:
            backend = self.sagemaker_backend
            name = self._get_param("EndpointName")
            endpoint = in_service(backend, name)
            config = backend.describe_endpoint_config(self._get_param("EndpointConfigName"))
            endpoint.endpoint_status = "Updating"

            def updated() -> None:
                stand_in.on_deploy(name, config["ProductionVariants"])
                endpoint.endpoint_config_name = config["EndpointConfigName"]
                endpoint.production_variants = endpoint._process_production_variants(
                    config["ProductionVariants"]
                )
                endpoint.endpoint_status = "InService"

            stand_in._later(updated)
            return ActionResult({"EndpointArn": endpoint.arn})

        patches: list[Any] = [
            mock.patch.object(
                models.FakeEndpoint, "_process_production_variants", keep_zero_weights
            ),
            mock.patch.object(backend_type, "create_endpoint", create_endpoint_later),
            mock.patch.object(backend_type, "create_endpoint_config", create_config_once),
            mock.patch.object(backend_type, "create_model", create_model_once),
            mock.patch.object(backend_type, "delete_endpoint", delete_and_stop),
            mock.patch.object(
                backend_type, "update_endpoint_weights_and_capacities", update_weights_in_service
            ),
            mock.patch.object(
                responses.SageMakerResponse, "update_endpoint", update_endpoint, create=True
            ),
        ]
        for patch in patches:
            self._stack.enter_context(patch)
