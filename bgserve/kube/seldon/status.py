"""Reading a Seldon Core v1 SeldonDeployment's status one predictor at a time.

``status.state`` speaks for the whole SeldonDeployment: it is ``Creating`` while any
predictor is not available, so it cannot tell whether one particular predictor serves.
The status also reports each predictor's Kubernetes Deployments (``deploymentStatus``,
keyed ``<sdep>-<predictor>-<n>-<container>``) and Service (``serviceStatus``, keyed
``<sdep>-<predictor>``); those say it per predictor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bgserve.kube.seldon.objects import predictor_name, predictors_of


def predictor_deployments(obj: Mapping[str, Any], predictor: str) -> list[Mapping[str, Any]]:
    """The ``deploymentStatus`` entries of one predictor of the SeldonDeployment ``obj``."""
    prefix = f"{obj['metadata']['name']}-{predictor}-"
    reported = obj.get("status", {}).get("deploymentStatus") or {}
    return [entry for key, entry in reported.items() if key.startswith(prefix)]


def predictor_available(obj: Mapping[str, Any], release_id: int) -> bool:
    """Whether the release's predictor is in the spec, has its Service reported and, by
    its own Deployments, an available replica (the whole SeldonDeployment's state only
    when the controller reports no Deployment of it)."""
    predictor = predictor_name(release_id)
    if predictor not in {p["name"] for p in predictors_of(obj)}:
        return False
    status = obj.get("status", {})
    if f"{obj['metadata']['name']}-{predictor}" not in (status.get("serviceStatus") or {}):
        return False
    deployments = predictor_deployments(obj, predictor)
    if deployments:
        return all(int(d.get("availableReplicas") or 0) > 0 for d in deployments)
    return bool(status.get("state") == "Available")
