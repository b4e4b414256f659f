"""The Seldon backend: Seldon Core v2 Models + Experiment (:mod:`.v2`) or a v1
SeldonDeployment (:mod:`.v1`), picked by ``BGSERVE_SELDON_FLAVOUR``."""

from __future__ import annotations

from typing import Any

from bgserve.backends.base import Backend
from bgserve.settings import Settings


def seldon_backend(settings: Settings, **kwargs: Any) -> Backend:
    """The backend of ``settings.seldon_flavour``; ``kwargs`` go to its constructor
    (``api``, ``clock``, ``sleep``). Raises BackendError without a Kubernetes config."""
    if settings.seldon_flavour == "v1":
        from bgserve.backends.kube.seldon.v1 import SeldonV1Backend

        return SeldonV1Backend(settings, **kwargs)
    from bgserve.backends.kube.seldon.v2 import SeldonV2Backend

    return SeldonV2Backend(settings, **kwargs)
