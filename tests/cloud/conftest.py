"""The SageMaker stand-in with what runs behind it: real slot processes and the runtime."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

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
