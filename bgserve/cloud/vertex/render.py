"""``bgserve render`` for Vertex AI: the REST requests that build a deployment's endpoint as
its stored state routes it (``curl -X <method> -d @<document>`` or any HTTP client with a
Google token), each body written by the SDK's own request types in the API's JSON form.
gcloud takes no files for endpoints and deployed models, and Terraform has no deployed
model resource for a custom model, so the REST requests are the one declarative form."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from bgserve.backends.routes import check_weights
from bgserve.cloud.vertex import names
from bgserve.cloud.vertex.resources import (
    deployed_model_message,
    endpoint_message,
    model_message,
    traffic_split,
)
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import InvalidInput
from bgserve.settings.cloud import VertexGroup

Request = tuple[str, dict[str, Any]]
"""``<METHOD> <path>`` of a Vertex AI REST call and its JSON body."""


def endpoint_requests(
    deployment: str,
    routes: Sequence[Route],
    releases: Mapping[int, Release],
    vx: VertexGroup,
    env: Mapping[str, str],
) -> list[Request]:
    """Create the endpoint, then per routed release upload its model and deploy it, then set
    the traffic split (Vertex refuses a split naming deployed models that do not exist
    yet). Raises InvalidInput for routes that do not sum to 100 or name a release missing
    from ``releases``."""
    from google.cloud.aiplatform_v1 import DeployModelRequest, UploadModelRequest

    check_weights(deployment, routes)
    missing = sorted(r.release_id for r in routes if r.release_id not in releases)
    if missing:
        raise InvalidInput(f"routes of {deployment} name unknown releases {missing}")
    location = f"projects/{vx.project or '<project>'}/locations/{vx.location or '<location>'}"
    endpoint_id = names.endpoint_name(vx.name_prefix, deployment)
    endpoint = f"{location}/endpoints/{endpoint_id}"
    requests = [
        (
            f"POST /v1/{location}/endpoints?endpointId={endpoint_id}",
            _json(endpoint_message(deployment)),
        )
    ]
    for route in routes:
        model_id = names.model_name(vx.name_prefix, deployment, route.release_id)
        model = model_message(deployment, releases[route.release_id], vx, env)
        upload = UploadModelRequest(model=model, model_id=model_id)
        requests.append((f"POST /v1/{location}/models:upload", _json(upload)))
        deployed = deployed_model_message(f"{location}/models/{model_id}", route.release_id, vx)
        deploy = DeployModelRequest(deployed_model=deployed)
        requests.append((f"POST /v1/{endpoint}:deployModel", _json(deploy)))
    split = traffic_split({r.release_id: r.weight for r in routes})
    routed = endpoint_message(deployment)
    routed.traffic_split = split
    requests.append((f"PATCH /v1/{endpoint}?updateMask=trafficSplit", _json(routed)))
    return requests


def _json(message: Any) -> dict[str, Any]:
    """A message's JSON form as the REST API takes it (camelCase, defaults left out)."""
    from google.protobuf import json_format

    found: dict[str, Any] = json_format.MessageToDict(type(message).pb(message))
    return found


def request_yaml(call: str, body: Mapping[str, Any]) -> str:
    """One request's body as a YAML document (JSON is YAML), headed by its call."""
    text = yaml.safe_dump(dict(body), sort_keys=False, default_flow_style=False)
    return f"---\n# {call} (https://{{location}}-aiplatform.googleapis.com)\n{text}"


def request_filename(call: str, body: Mapping[str, Any]) -> str:
    """``<verb>-<name>.yaml``: one file per request, unique within a render."""
    if call.startswith("PATCH"):
        return f"update-endpoint-{body['displayName']}.yaml"
    if call.endswith(":deployModel"):
        return f"deploy-model-{body['deployedModel']['displayName']}.yaml"
    if call.endswith("models:upload"):
        return f"upload-model-{body['modelId']}.yaml"
    return f"create-endpoint-{body['displayName']}.yaml"
