"""``bgserve render`` for SageMaker: the API requests that build a deployment's endpoint as
its stored state routes it, each a document the AWS CLI takes as it is
(``aws sagemaker create-model --cli-input-yaml file://...``). Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from bgserve.backends.routes import check_weights
from bgserve.cloud.sagemaker import names
from bgserve.cloud.sagemaker.variants import MANAGED_TAGS, model_request, variant_entry
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import InvalidInput
from bgserve.settings.cloud import SageMakerGroup

Request = tuple[str, dict[str, Any]]
"""An AWS CLI command (``create-model``) and its request."""


def endpoint_requests(
    deployment: str,
    routes: Sequence[Route],
    releases: Mapping[int, Release],
    sm: SageMakerGroup,
    env: Mapping[str, str],
) -> list[Request]:
    """CreateModel for every routed release, then CreateEndpointConfig with a variant per
    release at its weight, then CreateEndpoint. Raises InvalidInput for routes that do not
    sum to 100 or name a release missing from ``releases``."""
    check_weights(deployment, routes)
    missing = sorted(r.release_id for r in routes if r.release_id not in releases)
    if missing:
        raise InvalidInput(f"routes of {deployment} name unknown releases {missing}")
    prefix = sm.name_prefix
    requests: list[Request] = []
    variants = []
    for route in routes:
        model = names.model_name(prefix, deployment, route.release_id)
        requests.append(
            ("create-model", model_request(model, deployment, releases[route.release_id], sm, env))
        )
        entry = variant_entry(model, route.release_id, float(route.weight), sm.instance_count, sm)
        variants.append(entry)
    config = names.config_name(prefix, deployment, 1)
    tags = list(MANAGED_TAGS)
    requests.append(
        (
            "create-endpoint-config",
            {"EndpointConfigName": config, "ProductionVariants": variants, "Tags": tags},
        )
    )
    endpoint = {
        "EndpointName": names.endpoint_name(prefix, deployment),
        "EndpointConfigName": config,
        "Tags": tags,
    }
    requests.append(("create-endpoint", endpoint))
    return requests


def request_yaml(command: str, request: Mapping[str, Any]) -> str:
    """One request as a YAML document, headed by the command that takes it."""
    body = yaml.safe_dump(dict(request), sort_keys=False, default_flow_style=False)
    return f"---\n# aws sagemaker {command} --cli-input-yaml file://<this document>\n{body}"


def request_filename(command: str, request: Mapping[str, Any]) -> str:
    """``<command>-<name>.yaml``: one file per request, unique within a render."""
    name = next(v for k, v in request.items() if k.endswith("Name"))
    return f"{command}-{name}.yaml"
