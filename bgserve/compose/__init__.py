"""The composition root: the one place that builds store, registry, backend and service
from :class:`bgserve.settings.Settings`.

- :mod:`.components`: the running parts (:class:`Components`) and :func:`build_components`;
- :mod:`.backends`: the backend ``BGSERVE_BACKEND`` names and the live-traffic source;
- :mod:`.stores`: the state database and the MLflow registry;
- :mod:`.parts`: the comparer's and shadow traffic's settings and parts;
- :mod:`.election`: the lease replicas compete for and the local state's claim.
- :mod:`.follow`: follow rules' store, handler, engine and webhook verifier.
"""

from bgserve.compose.backends import build_backend, build_traffic_source
from bgserve.compose.components import Components, build_components
from bgserve.compose.stores import build_registry, build_store, registry_at

__all__ = [
    "Components",
    "build_backend",
    "build_components",
    "build_registry",
    "build_store",
    "build_traffic_source",
    "registry_at",
]
