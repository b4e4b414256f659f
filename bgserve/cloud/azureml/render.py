"""``bgserve render`` for Azure ML: the Azure ML CLI v2 documents that build a deployment's
endpoint as its stored state routes it, each taken by ``az ml`` as it is. Written by the
SDK's own entities (their YAML form, headed by the CLI's ``$schema``). Pure but for the SDK
import."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from bgserve.backends.routes import check_weights
from bgserve.cloud.azureml.deployments import deployment_entity, endpoint_entity, traffic_map
from bgserve.cloud.azureml.names import endpoint_name
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import InvalidInput
from bgserve.settings.cloud import AzureMLGroup

SCHEMAS = "https://azuremlschemas.azureedge.net/latest"
Document = tuple[str, dict[str, Any]]
"""An ``az ml`` command (``online-endpoint create``) and the YAML document it takes."""


def endpoint_documents(
    deployment: str,
    routes: Sequence[Route],
    releases: Mapping[int, Release],
    az: AzureMLGroup,
    env: Mapping[str, str],
) -> list[Document]:
    """The endpoint with no traffic, a deployment per routed release, then the endpoint
    with its traffic (Azure refuses traffic to deployments that do not exist yet). Raises
    InvalidInput for routes that do not sum to 100 or name a release missing from
    ``releases``."""
    check_weights(deployment, routes)
    missing = sorted(r.release_id for r in routes if r.release_id not in releases)
    if missing:
        raise InvalidInput(f"routes of {deployment} name unknown releases {missing}")
    name = endpoint_name(az.name_prefix, deployment)
    documents = [("online-endpoint create", _plain(endpoint_entity(name), "Endpoint"))]
    for route in routes:
        entity = deployment_entity(name, deployment, releases[route.release_id], az, env)
        document = _plain(entity, "Deployment")
        # Inline, as the CLI registers it: the SDK's anonymous name and hash are its own.
        for key in ("name", "version", "tags"):
            document["environment"].pop(key, None)
        documents.append(("online-deployment create", document))
    routed = endpoint_entity(name)
    routed.traffic = traffic_map({r.release_id: r.weight for r in routes})
    documents.append(("online-endpoint update", _plain(routed, "Endpoint")))
    return documents


def _plain(entity: Any, kind: str) -> dict[str, Any]:
    """An entity's YAML form as plain dicts (the SDK builds it of OrderedDicts), headed by
    the CLI's schema of a managed online ``kind``."""
    schema = f"{SCHEMAS}/managedOnline{kind}.schema.json"
    form: dict[str, Any] = json.loads(json.dumps(entity._to_dict()))
    return {"$schema": schema, **form}


def document_yaml(command: str, document: Mapping[str, Any]) -> str:
    """One document, headed by the command that takes it."""
    body = yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False)
    return f"---\n# az ml {command} --file <this document>\n{body}"


def document_filename(command: str, document: Mapping[str, Any]) -> str:
    """``<command>-<name>.yaml``: one file per document, unique within a render."""
    return f"{command.replace(' ', '-')}-{document['name']}.yaml"
