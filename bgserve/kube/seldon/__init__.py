"""The Seldon backend: Seldon Core v2 Models + Experiment (:mod:`.v2`) or a v1
SeldonDeployment (:mod:`.v1`), picked by ``BGSERVE_SELDON_FLAVOUR``."""

from __future__ import annotations

import time
from collections.abc import Callable

from kubernetes import client

from bgserve.backends.base import Backend
from bgserve.kube.objects import NO_MLFLOW, SlotMlflow
from bgserve.settings import KubeGroup


def seldon_backend(
    kube: KubeGroup,
    *,
    ready_timeout: float = 120.0,
    mlflow: SlotMlflow = NO_MLFLOW,
    api: client.ApiClient | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Backend:
    """The backend of ``kube.seldon.flavour`` (arguments as
    :class:`~bgserve.kube.base.KubeBackend`'s). Raises BackendError without a
    Kubernetes config."""
    if kube.seldon.flavour == "v1":
        from bgserve.kube.seldon.v1 import SeldonV1Backend

        return SeldonV1Backend(
            kube, ready_timeout=ready_timeout, mlflow=mlflow, api=api, clock=clock, sleep=sleep
        )
    from bgserve.kube.seldon.v2 import SeldonV2Backend

    return SeldonV2Backend(
        kube, ready_timeout=ready_timeout, mlflow=mlflow, api=api, clock=clock, sleep=sleep
    )
