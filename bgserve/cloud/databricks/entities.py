"""What Databricks says of a serving endpoint, read as bgserve's slots and weights, and the
SDK's request dataclasses that change it: no calls.

A deployment is one serving endpoint; each release one served entity named
``release-<id>``: the release's bundle as an MLflow model version (``entity_name`` the
bundle's registered name, ``entity_version`` its version), served by Databricks' own
MLflow scoring server. The route is the config's ``traffic_config.routes`` (whole percents
summing to 100).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bgserve.cloud.databricks.names import entity_name, release_of_entity
from bgserve.domain.release import Release
from bgserve.settings.cloud import DatabricksGroup

# Every endpoint bgserve creates carries it; an endpoint without it is not bgserve's.
MANAGED_BY = ("managed-by", "bgserve")
READY = "DEPLOYMENT_READY"
IN_PROGRESS = "IN_PROGRESS"


def is_managed(endpoint: Any) -> bool:
    """Whether an endpoint's tags say bgserve created it."""
    return any((t.key, t.value) == MANAGED_BY for t in endpoint.tags or ())


def managed_tags() -> list[Any]:
    """The tags of every endpoint bgserve creates."""
    from databricks.sdk.service.serving import EndpointTag

    return [EndpointTag(key=MANAGED_BY[0], value=MANAGED_BY[1])]


def served_entity(release: Release, group: DatabricksGroup) -> Any:
    """The served entity of one release: its bundle's model version, the settings' size."""
    from databricks.sdk.service.serving import ServedEntityInput, ServingModelWorkloadType

    return ServedEntityInput(
        name=entity_name(release.id),
        entity_name=release.bundle_name,
        entity_version=str(release.bundle_version),
        workload_size=group.workload_size,
        workload_type=ServingModelWorkloadType(group.workload_type),
        scale_to_zero_enabled=group.scale_to_zero,
    )


def as_inputs(entities: Sequence[Any]) -> list[Any]:
    """Served entities as Databricks reports them, as the inputs that keep them unchanged
    (an update names every entity the endpoint keeps)."""
    from databricks.sdk.service.serving import ServedEntityInput

    return [ServedEntityInput.from_dict(e.as_dict()) for e in entities]


def traffic_config(weights: Mapping[int, int]) -> Any:
    """The traffic config giving each release's entity its percent (zeros kept: every
    entity of the endpoint is named)."""
    from databricks.sdk.service.serving import Route, TrafficConfig

    return TrafficConfig(
        routes=[
            Route(served_entity_name=entity_name(r), traffic_percentage=w)
            for r, w in sorted(weights.items())
        ]
    )


def entities(endpoint: Any) -> dict[int, Any]:
    """bgserve's served entities of the endpoint's current config, by release id."""
    config = endpoint.config
    found = {}
    for entity in (config.served_entities if config else None) or ():
        release_id = release_of_entity(entity.name)
        if release_id is not None:
            found[release_id] = entity
    return found


def routed(endpoint: Any) -> dict[int, int]:
    """Each bgserve entity's percent in the endpoint's current traffic config."""
    config = endpoint.config
    routes = config.traffic_config.routes if config and config.traffic_config else None
    found = {}
    for route in routes or ():
        release_id = release_of_entity(route.served_entity_name or route.served_model_name)
        if release_id is not None:
            found[release_id] = int(route.traffic_percentage)
    return found


def is_ready(entity: Any) -> bool:
    """Whether a served entity's deployment is ready (it answers calls)."""
    state = entity.state.deployment if entity.state else None
    return getattr(state, "value", state) == READY


def is_updating(endpoint: Any) -> bool:
    """Whether a config update of the endpoint is in progress."""
    update = endpoint.state.config_update if endpoint.state else None
    return getattr(update, "value", update) == IN_PROGRESS


def entity_differs(existing: Any, release: Release) -> str | None:
    """What makes an existing served entity another release's than ``release`` (another
    bundle under bgserve's name), None if nothing."""
    have = (existing.entity_name, existing.entity_version)
    want = (release.bundle_name, str(release.bundle_version))
    if have != want:
        return f"it serves {have[0]} version {have[1]}, not {want[0]} version {want[1]}"
    return None


def state_of(entity: Any) -> str:
    """A served entity's deployment state and Databricks' message about it."""
    state = entity.state
    if state is None:
        return "no state reported"
    deployment = getattr(state.deployment, "value", state.deployment)
    message = state.deployment_state_message
    return f"{deployment}: {message}" if message else str(deployment)


def pending_failures(endpoint: Any) -> str:
    """The entities of the endpoint's pending config that failed, with Databricks' message
    about each ("" when none did)."""
    pending = endpoint.pending_config
    failed = [
        f"{e.name}: {state_of(e)}"
        for e in (pending.served_entities if pending else None) or ()
        if e.state is not None and not is_ready(e) and "FAILED" in state_of(e)
    ]
    return "; ".join(failed)
