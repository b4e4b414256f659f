"""The SageMaker, Azure ML and Databricks stand-ins with what runs behind them: real slot
processes, SageMaker's runtime, Azure ML's scoring endpoints and MLflow's scoring servers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.azureml import AzureMLStandIn
from tests.support.azureml_platform import ContainerHost as AzureContainers
from tests.support.azureml_platform import ScoringHost
from tests.support.databricks import DatabricksStandIn
from tests.support.databricks_platform import ModelHost
from tests.support.kube import SlotProcesses
from tests.support.sagemaker import SageMakerStandIn
from tests.support.sagemaker_platform import ContainerHost, Runtime


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
