"""Shadow traffic (``settings.shadow``): flat variables ``BGSERVE_SHADOW_<FIELD>``."""

from __future__ import annotations

from pydantic import Field

from bgserve.dataplane.wire import SHADOW_MAX_BYTES
from bgserve.settings.groups import Group, spelt_flat


class ShadowGroup(Group):
    """How mirrored traffic is collected, scored and kept (``BGSERVE_SHADOW_*``)."""

    model_config = spelt_flat("shadow_")

    store_inputs: bool = Field(
        True,
        description="Keep the inputs and both answers of the most different and most recent "
        "mirrored pairs in the shadow report; false keeps scores only (sensitive traffic).",
    )
    min_pairs: int = Field(
        50, ge=1, description="Mirrored pairs a shadow report needs before it gates promotion."
    )
    keep_pairs: int = Field(
        10, ge=0, le=1000, description="Most different and most recent pairs a shadow report keeps."
    )
    queue: int = Field(
        256, ge=1, description="Mirror copies waiting for green before new ones are dropped."
    )
    max_bytes: int = Field(
        SHADOW_MAX_BYTES,
        ge=1024 * 1024,
        description="Bytes the data plane may hold for shadow traffic, counted across every "
        "deployment's queued copies (each with its whole request body) and the answered pairs "
        "waiting to be scored; a copy beyond it is dropped and counted.",
    )
    green_nice: int = Field(
        19,
        ge=0,
        le=19,
        description="Nice value of a local green slot while it only answers mirrored copies, "
        "so they never take CPU time from the answers clients wait for; 0 keeps green's "
        "priority (its shadow latencies are then comparable with blue's on a busy machine).",
    )
    interval_seconds: float = Field(
        0.5, gt=0, le=10, description="How often mirrored pairs are collected and scored."
    )
