"""``bgserve render`` for Databricks: the serving endpoint of a deployment as its stored
state routes it, the body ``POST /api/2.0/serving-endpoints`` takes (``databricks
serving-endpoints create --json @<file>``; the same fields make a Databricks Asset Bundle's
``resources.model_serving_endpoints`` entry). Written by the SDK's own dataclasses
(``as_dict``). Pure but for the SDK import."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from bgserve.backends.routes import check_weights
from bgserve.cloud.databricks.entities import managed_tags, served_entity, traffic_config
from bgserve.cloud.databricks.names import endpoint_name
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import InvalidInput
from bgserve.settings.cloud import DatabricksGroup

Document = tuple[str, dict[str, Any]]
"""The REST call (``POST /api/2.0/serving-endpoints``) and the JSON body it takes."""
CREATE = "POST /api/2.0/serving-endpoints"


def endpoint_documents(
    deployment: str,
    routes: Sequence[Route],
    releases: Mapping[int, Release],
    group: DatabricksGroup,
) -> list[Document]:
    """The endpoint with one served entity per routed release and its traffic config.
    Raises InvalidInput for routes that do not sum to 100 or name a release missing from
    ``releases``."""
    from databricks.sdk.service.serving import EndpointCoreConfigInput

    check_weights(deployment, routes)
    missing = sorted(r.release_id for r in routes if r.release_id not in releases)
    if missing:
        raise InvalidInput(f"routes of {deployment} name unknown releases {missing}")
    name = endpoint_name(group.name_prefix, deployment)
    config = EndpointCoreConfigInput(
        name=name,
        served_entities=[served_entity(releases[r.release_id], group) for r in routes],
        traffic_config=traffic_config({r.release_id: r.weight for r in routes}),
    ).as_dict()  # the SDK's type requires the endpoint's name in the config too
    body = {"name": name, "config": config, "tags": [t.as_dict() for t in managed_tags()]}
    return [(CREATE, body)]


def document_json(command: str, document: Mapping[str, Any]) -> str:
    """One document as indented JSON (JSON has no comments: the call is in the docs)."""
    return json.dumps(dict(document), indent=2) + "\n"


def document_filename(command: str, document: Mapping[str, Any]) -> str:
    """``serving-endpoint-<name>.json``: one file per endpoint."""
    return f"serving-endpoint-{document['name']}.json"
