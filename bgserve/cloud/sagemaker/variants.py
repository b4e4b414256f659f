"""What SageMaker says of an endpoint, read as bgserve's slots and weights, and the
requests that change it: pure (dicts in, dicts out), no calls.

A deployment is one endpoint; each release a production variant named ``r<release id>``
hosting one model. The route is the variants' weights: bgserve writes them as percents,
so they read back as percents of their sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bgserve.cloud.sagemaker.names import release_of_variant, variant_name
from bgserve.domain.release import Release
from bgserve.settings.cloud import SageMakerGroup
from bgserve.slot.sagemaker import DEPLOYMENT_ENV, MODEL_URI_ENV, RELEASE_ID_ENV

Obj = dict[str, Any]

# Every resource bgserve creates carries it; an endpoint without it is not bgserve's.
MANAGED_BY = ("managed-by", "bgserve")
MANAGED_TAGS = ({"Key": MANAGED_BY[0], "Value": MANAGED_BY[1]},)
# A new endpoint's one variant gets SageMaker's default weight (a lone variant takes all
# traffic whatever its weight). bgserve's own routes are percents, so a lone variant still
# at this weight has never been routed by bgserve and may be retired with its endpoint.
UNROUTED_WEIGHT = 1.0
# Statuses in which the variants an endpoint lists are serving (an update in progress
# keeps the old fleet serving until the new one takes over).
SERVING = frozenset({"InService", "Updating", "SystemUpdating", "UpdateRollbackFailed"})
# Statuses that accept a change (UpdateEndpoint, UpdateEndpointWeightsAndCapacities).
SETTLED = frozenset({"InService"})
FAILED = frozenset({"Failed", "OutOfService"})
_STARTING = frozenset({"Creating", "Deleting"})


@dataclass(frozen=True)
class Variant:
    """One production variant of an endpoint, as bgserve reads it."""

    release_id: int
    name: str
    weight: float
    desired_instances: int | None
    serving: bool


def variants(endpoint: Mapping[str, Any]) -> dict[int, Variant]:
    """The variants bgserve named on a DescribeEndpoint answer, by release id (others, if a
    user added any, are left alone)."""
    status = endpoint.get("EndpointStatus", "")
    found = {}
    for summary in endpoint.get("ProductionVariants") or []:
        release_id = release_of_variant(str(summary.get("VariantName", "")))
        if release_id is None:
            continue
        found[release_id] = Variant(
            release_id,
            summary["VariantName"],
            float(summary.get("CurrentWeight", summary.get("DesiredWeight", 0.0)) or 0.0),
            summary.get("DesiredInstanceCount"),
            status in SERVING and _instances_up(summary),
        )
    return found


def _instances_up(summary: Mapping[str, Any]) -> bool:
    """Whether the variant has an instance answering: none while its instances are being
    created or replaced (CurrentInstanceCount 0) or the variant is still being set up."""
    count = summary.get("CurrentInstanceCount")
    if count is not None and count < 1:
        return False
    phases = {s.get("Status") for s in summary.get("VariantStatus") or []}
    return not phases & _STARTING


def percents(found: Mapping[int, Variant]) -> dict[int, int]:
    """Each variant's share of the traffic, in whole percents."""
    total = sum(v.weight for v in found.values())
    if total <= 0:
        return dict.fromkeys(found, 0)
    return {r: round(v.weight * 100 / total) for r, v in found.items()}


def takes_traffic(release_id: int, found: Mapping[int, Variant]) -> int:
    """The percent of traffic ``release_id``'s variant takes for the retire rule: a lone
    variant that bgserve never routed (still at :data:`UNROUTED_WEIGHT`) takes none."""
    variant = found[release_id]
    if len(found) == 1 and variant.weight == UNROUTED_WEIGHT:
        return 0
    return percents(found)[release_id]


def bundle_uri(release: Release, sm: SageMakerGroup) -> str:
    """Where a release's bundle comes from: ``sagemaker_bundle_storage_uri`` filled in (an
    S3 model.tar.gz), else its MLflow URI, which the slot loads itself."""
    if not sm.bundle_storage_uri:
        return release.bundle_uri
    return sm.bundle_storage_uri.format(
        bundle_name=release.bundle_name,
        bundle_version=release.bundle_version,
        release=release.name,
        release_id=release.id,
    )


def model_request(
    name: str, deployment: str, release: Release, sm: SageMakerGroup, env: Mapping[str, str]
) -> Obj:
    """CreateModel's request for one release: the bgserve image, the bundle from S3 when
    one is configured (SageMaker unpacks it into /opt/ml/model), else from MLflow."""
    source = bundle_uri(release, sm)
    from_s3 = source.startswith("s3://")
    container: Obj = {
        "Image": sm.image,
        "Mode": "SingleModel",
        "Environment": {
            **env,
            MODEL_URI_ENV: "/opt/ml/model" if from_s3 else source,
            DEPLOYMENT_ENV: deployment,
            RELEASE_ID_ENV: str(release.id),
        },
    }
    if from_s3:
        container["ModelDataUrl"] = source
    return {
        "ModelName": name,
        "PrimaryContainer": container,
        "ExecutionRoleArn": sm.role_arn,
        "Tags": list(MANAGED_TAGS),
    }


def model_differs(existing: Obj, wanted: Obj) -> str | None:
    """What makes the model SageMaker has under a name another than CreateModel's request
    ``wanted`` would make (its image, bundle, deployment or release), None if nothing.

    Release ids are a bgserve state's own: another state (a second install, a fresh
    database) under the same name prefix means another release under the same id.
    """
    have = existing.get("PrimaryContainer") or {}
    want = wanted["PrimaryContainer"]
    if have.get("Image") != want["Image"]:
        return f"image {have.get('Image')!r}, not {want['Image']!r}"
    if have.get("ModelDataUrl") != want.get("ModelDataUrl"):
        return f"bundle {have.get('ModelDataUrl')!r}, not {want.get('ModelDataUrl')!r}"
    have_env = have.get("Environment") or {}
    for key in (MODEL_URI_ENV, DEPLOYMENT_ENV, RELEASE_ID_ENV):
        if have_env.get(key) != want["Environment"][key]:
            return f"{key}={have_env.get(key)!r}, not {want['Environment'][key]!r}"
    return None


def variant_entry(
    model: str, release_id: int, weight: float, instances: int, sm: SageMakerGroup
) -> Obj:
    """One ProductionVariant of an endpoint config."""
    return {
        "VariantName": variant_name(release_id),
        "ModelName": model,
        "InstanceType": sm.instance_type,
        "InitialInstanceCount": instances,
        "InitialVariantWeight": weight,
    }


def config_keeping(
    current_config: Mapping[str, Any],
    found: Mapping[int, Variant],
    *,
    drop: int | None = None,
) -> list[Obj]:
    """The variants of a new endpoint config that keeps what serves now: every variant of
    ``current_config`` at its current weight and desired instance count, without ``drop``.
    (UpdateEndpoint deploys a config's variants as they are written, so the live weights
    must be written into it or the update would move traffic.)"""
    kept = []
    for entry in current_config.get("ProductionVariants") or []:
        release_id = release_of_variant(str(entry.get("VariantName", "")))
        if release_id is not None and release_id == drop:
            continue
        live = found.get(release_id) if release_id is not None else None
        copy = dict(entry)
        if live is not None:
            copy["InitialVariantWeight"] = live.weight
            if live.desired_instances is not None:
                copy["InitialInstanceCount"] = live.desired_instances
        kept.append(copy)
    return kept


def weights_request(found: Mapping[int, Variant], weights: Mapping[int, int]) -> list[Obj]:
    """UpdateEndpointWeightsAndCapacities' DesiredWeightsAndCapacities: every bgserve
    variant at its percent (0 for one the routes leave out), with its desired instance
    count repeated (the count stays as it is; sent so that nothing reads a missing count as
    a change)."""
    desired = []
    for release_id, variant in sorted(found.items()):
        entry: Obj = {
            "VariantName": variant.name,
            "DesiredWeight": float(weights.get(release_id, 0)),
        }
        if variant.desired_instances is not None:
            entry["DesiredInstanceCount"] = variant.desired_instances
        desired.append(entry)
    return desired


def unchanged(found: Mapping[int, Variant], weights: Mapping[int, int]) -> bool:
    """Whether the endpoint already carries exactly ``weights`` (as written by bgserve)."""
    return all(v.weight == float(weights.get(r, 0)) for r, v in found.items())
