"""The platforms' own request mirroring, added to a rendered route: a share of the live
requests copied to green.

- Gateway API HTTPRoute: a ``RequestMirror`` filter on the weighted rule (with
  ``percent``; an Extended feature, so the Gateway implementation must support it);
- Istio VirtualService: ``mirror`` + ``mirrorPercentage`` on the weighted route;
- Seldon Core 2 Experiment: ``mirror: {name, percent}``.

All three send the copy and **discard green's answer**; the KServe backend pairs the
copies from the slots' own records (:mod:`bgserve.kube.mirror_shadow`). Pure: objects in,
objects out.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from bgserve.errors import InvalidInput
from bgserve.kube.kserve.objects import SERVICE_PORT, isvc_name, predictor_host
from bgserve.kube.seldon.objects import model_name

Obj = dict[str, Any]


def with_mirror(
    obj: Mapping[str, Any], deployment: str, green: int, percent: int, namespace: str
) -> Obj:
    """A copy of the route object ``obj`` (HTTPRoute, VirtualService or Experiment) that
    also mirrors ``percent`` of its requests to release ``green``'s slot.

    Raises InvalidInput for a percent outside 1..100 or an object of another kind.
    """
    if not 1 <= percent <= 100:
        raise InvalidInput(
            f"shadow percent {percent} is out of range: use 1 to 100", field="percent"
        )
    mirrored = copy.deepcopy(dict(obj))
    kind = mirrored.get("kind")
    if kind == "HTTPRoute":
        _mirror_http_route(mirrored, deployment, green, percent)
    elif kind == "VirtualService":
        _mirror_virtual_service(mirrored, deployment, green, percent, namespace)
    elif kind == "Experiment":
        mirrored["spec"]["mirror"] = {"name": model_name(deployment, green), "percent": percent}
    else:
        raise InvalidInput(f"a {kind} cannot mirror requests", field="backend")
    return mirrored


def _mirror_http_route(obj: Obj, deployment: str, green: int, percent: int) -> None:
    mirror = {
        "type": "RequestMirror",
        "requestMirror": {
            "backendRef": {
                "group": "",
                "kind": "Service",
                "name": f"{isvc_name(deployment, green)}-predictor",
                "port": SERVICE_PORT,
            },
            "percent": percent,
        },
    }
    for rule in obj["spec"]["rules"]:
        rule["filters"] = [*rule.get("filters", []), mirror]


def _mirror_virtual_service(
    obj: Obj, deployment: str, green: int, percent: int, namespace: str
) -> None:
    for http in obj["spec"]["http"]:
        http["mirror"] = {
            "host": predictor_host(deployment, green, namespace),
            "port": {"number": SERVICE_PORT},
        }
        http["mirrorPercentage"] = {"value": float(percent)}


def mirror_route(
    objects: list[Obj], deployment: str, green: int | None, percent: int, namespace: str
) -> list[Obj]:
    """``objects`` (a backend's render) with the weighted route mirroring to green.

    Raises InvalidInput when there is no green to mirror to, or nothing that can mirror
    (Seldon v1's SeldonDeployment has no per-request mirror of a predictor).
    """
    if green is None:
        raise InvalidInput(
            "there is no green release to mirror to: stage one first", field="shadow"
        )
    kinds = {"HTTPRoute", "VirtualService", "Experiment"}
    if not any(o.get("kind") in kinds for o in objects):
        raise InvalidInput(
            "these objects have no route of bgserve's that can mirror (Seldon v1's "
            "SeldonDeployment, KServe's LLMInferenceService routing groups); use KServe "
            "InferenceServices with a gateway or Istio, or Seldon v2",
            field="shadow",
        )
    return [
        with_mirror(o, deployment, green, percent, namespace) if o.get("kind") in kinds else o
        for o in objects
    ]
