"""The SageMaker, Azure ML, Databricks and Vertex AI stand-ins with what runs behind them:
real slot processes, SageMaker's runtime, Azure ML's scoring endpoints, MLflow's scoring
servers and Vertex's dedicated endpoints."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.azureml import AzureMLStandIn
from tests.support.azureml_platform import ContainerHost as AzureContainers
from tests.support.azureml_platform import ScoringHost
from tests.support.databricks import DatabricksStandIn
from tests.support.databricks_platform import ModelHost
from tests.support.kube import SlotProcesses
from tests.support.sagemaker import SageMakerStandIn
from tests.support.sagemaker_platform import ContainerHost, Runtime
from tests.support.vertex import VertexStandIn
from tests.support.vertex_platform import ContainerHost as VertexContainers
from tests.support.vertex_platform import DedicatedHost


@dataclass
class SageMaker:
    """The stand-in's API, the containers it runs and its runtime."""

    api: SageMakerStandIn
    host: ContainerHost
    runtime: Runtime


@pytest.fixture
def stand_in() -> Iterator[SageMakerStandIn]:
    """The SageMaker API alone (no container runs): endpoints update in 50 ms."""
    with SageMakerStandIn(update_seconds=0.05) as api:
        yield api


@pytest.fixture
def sagemaker(stand_in: SageMakerStandIn, slots: SlotProcesses) -> Iterator[SageMaker]:
    """The stand-in with real slot processes behind its variants and its runtime."""
    host = ContainerHost(stand_in, slots)
    runtime = Runtime(stand_in, host)
    try:
        yield SageMaker(stand_in, host, runtime)
    finally:
        runtime.close()


@dataclass
class AzureML:
    """The Azure ML stand-in's API, the containers it runs and its scoring endpoints."""

    api: AzureMLStandIn
    host: AzureContainers
    scoring: ScoringHost


@pytest.fixture
def azure_api() -> AzureMLStandIn:
    """The Azure ML API alone (no container runs): operations complete in 50 ms."""
    return AzureMLStandIn()


@pytest.fixture
def azureml(azure_api: AzureMLStandIn, slots: SlotProcesses) -> Iterator[AzureML]:
    """The stand-in with real slot processes behind its deployments and scoring URIs."""
    host = AzureContainers(azure_api, slots)
    scoring = ScoringHost(azure_api, host)
    try:
        yield AzureML(azure_api, host, scoring)
    finally:
        scoring.close()


@pytest.fixture
def databricks_api() -> DatabricksStandIn:
    """The Databricks API alone (no model serves): config updates complete in 50 ms."""
    return DatabricksStandIn()


@pytest.fixture
def databricks(databricks_api: DatabricksStandIn) -> Iterator[ModelHost]:
    """The stand-in with MLflow's scoring server behind each served entity."""
    host = ModelHost(databricks_api)
    try:
        yield host
    finally:
        host.close()


@dataclass
class Vertex:
    """The Vertex AI stand-in's API, the containers it runs, its dedicated endpoints and the
    token their calls need."""

    api: VertexStandIn
    host: VertexContainers
    dedicated: DedicatedHost
    credentials: Any


@pytest.fixture
def vertex_api() -> Iterator[VertexStandIn]:
    """The Vertex AI API alone (no container runs): operations complete in 50 ms."""
    api = VertexStandIn()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def vertex(vertex_api: VertexStandIn, slots: SlotProcesses) -> Iterator[Vertex]:
    """The stand-in with real slot processes behind its deployed models and dedicated
    endpoints that take one token."""
    from google.oauth2.credentials import Credentials

    token = secrets.token_hex(8)
    host = VertexContainers(vertex_api, slots)
    dedicated = DedicatedHost(vertex_api, host, token)
    try:
        yield Vertex(vertex_api, host, dedicated, Credentials(token=token))
    finally:
        dedicated.close()
