"""Leader election settings (``settings.leader``): which replica runs the rollout engine
and slot recovery. Flat variables as ever: ``BGSERVE_LEADER_<FIELD>``.
"""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field, model_validator

from bgserve.settings.groups import Group, spelt_flat


class LeaderGroup(Group):
    """How replicas of one bgserve agree on a leader (``BGSERVE_LEADER_*``)."""

    model_config = spelt_flat("leader_")

    election: Literal["auto", "lease", "postgres", "off"] = Field(
        "auto",
        description="`lease`: a coordination.k8s.io Lease in `kube_namespace`; `postgres`: an "
        "advisory lock in the state database; `off`: this process always leads (one replica "
        "only); `auto`: lease with the kserve and seldon backends, postgres with a PostgreSQL "
        "state, off otherwise (the local backend is always a single process).",
    )
    lease_name: str = Field(
        "bgserve-leader",
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Name of the Lease (and key of the advisory lock) the replicas share.",
    )
    lease_duration_seconds: float = Field(
        15.0, ge=1, description="How long a lease nobody renews keeps others from taking it."
    )
    renew_deadline_seconds: float = Field(
        10.0, gt=0, description="How long a leader keeps leading while it cannot renew."
    )
    retry_period_seconds: float = Field(
        2.0, gt=0, description="How often a replica tries to take or renew the lease."
    )
    identity: str = Field(
        "",
        description="This replica's name in the lease; empty: POD_NAME (else the host name) "
        "and the process id.",
    )

    @model_validator(mode="after")
    def _deadlines_in_order(self) -> LeaderGroup:
        retry = self.retry_period_seconds
        renew = self.renew_deadline_seconds
        duration = self.lease_duration_seconds
        if not retry < renew < duration:
            raise ValueError(
                "leader election needs BGSERVE_LEADER_RETRY_PERIOD_SECONDS < "
                "BGSERVE_LEADER_RENEW_DEADLINE_SECONDS < BGSERVE_LEADER_LEASE_DURATION_SECONDS "
                f"(got {retry} < {renew} < {duration}), so a leader stops before another may start"
            )
        return self

    @property
    def resolved_identity(self) -> str:
        """This replica's identity in the lease."""
        if self.identity:
            return self.identity
        host = os.environ.get("POD_NAME") or socket.gethostname()
        return f"{host}_{os.getpid()}"
