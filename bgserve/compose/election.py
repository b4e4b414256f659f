"""Leader election and the local state's claim, from settings.

Which lease the replicas of one bgserve compete for (a Kubernetes Lease, a PostgreSQL
advisory lock, or none for a single process), its timing, and the claim that keeps a second
``serve`` off the local backend's state. The election loop itself is
:class:`bgserve.app.leadership.Leadership`.
"""

from __future__ import annotations

from bgserve.app.leadership import Lease, SoleLeader, Timing
from bgserve.errors import InvalidInput
from bgserve.settings import LeaderGroup, Settings
from bgserve.store.database import is_postgres
from bgserve.store.serve_claim import NO_CLAIM, Claim, claim_state, serve_identity


def claim_local_state(settings: Settings) -> Claim:
    """The local backend's claim on its state (one ``serve`` per state); none otherwise.
    Raises Conflict when another ``serve`` holds it."""
    if settings.backend != "local":
        return NO_CLAIM
    return claim_state(settings.resolved_state_url, serve_identity(settings.host, settings.port))


def leader_election_mode(settings: Settings) -> str:
    """``lease``, ``postgres`` or ``off``: what ``leader_election=auto`` resolves to."""
    mode = settings.leader.election
    if mode != "auto":
        return mode
    if settings.backend in ("kserve", "seldon"):
        return "lease"
    if settings.backend != "local" and is_postgres(settings.resolved_state_url):
        return "postgres"
    return "off"


def build_lease(settings: Settings) -> Lease:
    """The lease replicas compete for. Raises InvalidInput for a mode that cannot work."""
    mode = leader_election_mode(settings)
    if mode == "off":
        return SoleLeader()
    if settings.backend == "local":
        raise InvalidInput(
            "the local backend runs as one process (its slots are its children): leave "
            "BGSERVE_LEADER_ELECTION at auto or off",
            field="leader_election",
        )
    leader = settings.leader
    identity = leader.resolved_identity
    if mode == "postgres":
        if not is_postgres(settings.resolved_state_url):
            raise InvalidInput(
                "BGSERVE_LEADER_ELECTION=postgres needs a PostgreSQL BGSERVE_STATE_URL",
                field="leader_election",
            )
        from bgserve.store.advisory_lock import PostgresLease

        return PostgresLease(settings.resolved_state_url, leader.lease_name, identity)
    from bgserve.kube.client import api_client
    from bgserve.kube.lease import KubeLease

    return KubeLease(
        api_client(settings.kube),
        settings.kube.namespace,
        leader.lease_name,
        identity,
        leader.lease_duration_seconds,
    )


def timing_of(leader: LeaderGroup) -> Timing:
    """The leader election's timing."""
    return Timing(
        lease_duration=leader.lease_duration_seconds,
        renew_deadline=leader.renew_deadline_seconds,
        retry_period=leader.retry_period_seconds,
    )
