"""The narrow interfaces the application layer's parts are given, instead of each other.

The store, the registry and the backend implement them; a part names only what it uses,
so a test can hand it a small fake and a reader can see its reach from its constructor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from bgserve.backends.base import SlotInfo
from bgserve.domain.analysis import Check
from bgserve.domain.release import Release, ResolvedRelease
from bgserve.domain.state import DeploymentState
from bgserve.domain.window import SideWindow
from bgserve.gcpause import PauseStats
from bgserve.store import StoredDeployment


class Releases(Protocol):
    """Read access to registered releases (the store)."""

    def get_release(self, release_id: int) -> Release:
        """One release. Raises NotFound."""
        ...


class DeploymentReader(Protocol):
    """Read access to stored deployments (the store)."""

    def get_deployment(self, name: str) -> StoredDeployment:
        """The stored deployment. Raises NotFound."""
        ...

    def list_deployments(self) -> list[StoredDeployment]:
        """Every stored deployment."""
        ...


class Templates(Protocol):
    """Prompt template texts (the registry)."""

    def get_prompt_template(self, name: str, version: int) -> str:
        """The template text of one prompt version. Raises NotFound, RegistryUnavailable."""
        ...


class SlotLocator(Protocol):
    """Where a deployment's slots answer (the backend)."""

    def slot_info(self, deployment: str, release_id: int) -> SlotInfo | None:
        """The slot's endpoint and readiness, or None if there is no slot. No side effects."""
        ...


class SlotStarter(Protocol):
    """Starting the slot of a release the stored state already serves (the backend).

    Used only to bring back a slot that died: the routes that include it are then set
    through the executor.
    """

    def ensure_slot(self, deployment: str, release: Release) -> SlotInfo:
        """Idempotent; raises ReadinessTimeout or BackendError (see the Backend protocol)."""
        ...


class AliasMover(Protocol):
    """Moving the registry aliases of a cutover or revert (the registry)."""

    def move_aliases(self, deployment: str, live: Release, previous: Release | None) -> None:
        """Point ``<deployment>-live`` / ``-previous`` at these releases' three parts."""
        ...


class Registry(Templates, AliasMover, Protocol):
    """What the service needs from the model and prompt registry."""

    def register_release(self, name: str, model_uri: str, prompt_uri: str) -> ResolvedRelease:
        """Validate the name and URIs, resolve both to fixed versions, register the bundle.

        Raises InvalidInput (naming the field), NotFound, RegistryUnavailable.
        """
        ...


@runtime_checkable
class TrafficSource(Protocol):
    """Live traffic per slot, for the rollout engine's analysis (the local data plane, or
    Prometheus for the Kubernetes backends)."""

    def windows(self, deployment: str) -> Mapping[int, SideWindow]:
        """Cumulative requests, errors and latency histogram per release id of the
        deployment's slots, counted from an arbitrary origin (the engine subtracts two
        readings). A release with no traffic yet may be missing. Raises Unavailable when
        the counts cannot be read."""
        ...


class ShadowChecks(Protocol):
    """The shadow comparison as a plan's analysis check (the shadow collector)."""

    def check(self, deployment: str, state: DeploymentState) -> Check | None:
        """The shadow check of ``state``'s current pair, None when no shadow runs for it."""
        ...


SlotCounters = Mapping[str, Any]
"""One slot's counters since the data plane started: ``deployment``, ``role``,
``release_id``, ``requests``, ``errors`` and ``latency_buckets`` (per bucket of
:data:`bgserve.domain.latency.LATENCY_BUCKETS_MS`); from a data plane that serves chat
completions also ``ttft_buckets`` and ``tpot_buckets`` (ms, the same buckets) and
``output_tokens`` (their sum)."""


@runtime_checkable
class TrafficStats(Protocol):
    """The counters a data plane of bgserve's own keeps (the local backend): what
    ``/metrics`` and the dashboard show."""

    def traffic_reading(self) -> tuple[Sequence[SlotCounters], PauseStats | None]:
        """One reading of the data plane: its per-slot counters and its garbage-collector
        pauses (None when it does not report them). No side effects; raises BackendError
        when the data plane cannot be asked."""
        ...


@dataclass(frozen=True)
class TrafficReading:
    """One reading of the data plane's counters (see :class:`TrafficStats`)."""

    slots: Sequence[SlotCounters]
    pauses: PauseStats | None = None
