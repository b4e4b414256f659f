"""Releases and deployments: every operation the API and the CLI offer.

Each change is a pure transition of :mod:`bgserve.domain.rollout` (or
:mod:`bgserve.domain.slots`) handed to the :class:`~bgserve.app.executor.Executor`,
which sequences the side effects. The service itself only reads and chooses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from bgserve.app.executor import Executor
from bgserve.app.ports import Registry, TrafficReading, TrafficStats
from bgserve.backends.base import Backend, RouteReports, SlotInfo
from bgserve.domain import promotion, rollout, slots
from bgserve.domain.plan import Plan
from bgserve.domain.release import Release, ResolvedRelease, validate_name
from bgserve.domain.shadow import ShadowReport, check_shadow_gate
from bgserve.domain.state import DeploymentState
from bgserve.errors import InvalidInput
from bgserve.store import Event, Store, StoredDeployment

log = logging.getLogger("bgserve.service")


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


class Service:
    """Releases and deployments: registration, reads, and the changes through the executor."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        backend: Backend,
        executor: Executor,
        *,
        default_plan: Plan,
        clock: Callable[[], datetime] = utc_now,
        wall_clock: Callable[[], float] = time.time,
        shadow_gate: Callable[[str], ShadowReport | None] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.backend = backend
        self.executor = executor
        self._default_plan = default_plan
        self.clock = clock
        self.wall_clock = wall_clock
        self.shadow_gate = shadow_gate
        # Raises when no plan can advance through this replica (it may not lead).
        self.engine_check: Callable[[], None] = lambda: None

    # releases

    def register_release(
        self, name: str, model_uri: str, prompt_uri: str, principal: str
    ) -> Release:
        """Resolve ``model_uri`` and ``prompt_uri``, build the bundle and store the release.

        The registry validates the name and both URIs before it touches anything.
        """
        resolved = self.registry.register_release(name, model_uri, prompt_uri)
        release = self.store.add_release(name, resolved, model_uri, prompt_uri, self.clock())
        log.info("release %s registered by %s: %s", release.id, principal, release.bundle_uri)
        return release

    def get_release(self, release_id: int) -> Release:
        """One release. Raises NotFound."""
        return self.store.get_release(release_id)

    def list_releases(self) -> list[Release]:
        """All releases, oldest first."""
        return self.store.list_releases()

    # deployments: reads

    def get_deployment(self, name: str) -> StoredDeployment:
        """The stored deployment. Raises NotFound."""
        return self.store.get_deployment(name)

    def list_deployments(
        self, *, after: str | None = None, limit: int | None = None
    ) -> list[StoredDeployment]:
        """All deployments by name; or the first ``limit`` named after ``after``."""
        return self.store.list_deployments(after=after, limit=limit)

    def slot_info(self, name: str, release_id: int) -> SlotInfo | None:
        """Endpoint and readiness of one slot, as the backend reports it."""
        return self.backend.slot_info(name, release_id)

    def data_plane_url(self, name: str) -> str | None:
        """The weighted entry point clients call for ``name``, if the backend has one."""
        return self.backend.data_plane_url(name)

    def route_report(self, name: str) -> Mapping[str, Any] | None:
        """What the router reported of ``name``'s route last applied by this process (a
        gateway's generation taken); None when the backend's router reports nothing."""
        if isinstance(self.backend, RouteReports):
            return self.backend.route_report(name)
        return None

    def traffic(self) -> TrafficReading | None:
        """The data plane's per-slot counters and collector pauses; None when the backend
        keeps none (the Kubernetes backends: Prometheus has theirs). Raises BackendError
        when the data plane cannot be asked."""
        if not isinstance(self.backend, TrafficStats):
            return None
        slots, pauses = self.backend.traffic_reading()
        return TrafficReading(slots, pauses)

    def history(
        self, name: str, *, after_id: int | None = None, limit: int | None = None
    ) -> list[Event]:
        """The deployment's audit events, oldest first; or the first ``limit`` of those
        with an id above ``after_id``."""
        return self.store.history(name, after_id=after_id, limit=limit)

    # deployments: changes

    def create_deployment(self, name: str, release_id: int, principal: str) -> StoredDeployment:
        """Deploy ``release_id`` as blue at weight 100 of a new deployment ``name``."""
        validate_name(name, "name")
        release = self.store.get_release(release_id)
        return self.executor.create(rollout.create(name, release.id), principal)

    def stage_green(self, name: str, release_id: int, principal: str) -> StoredDeployment:
        """Deploy ``release_id`` as green at weight 0."""
        self.store.get_release(release_id)
        return self.executor.run(name, principal, lambda s: rollout.stage_green(s, release_id))

    def shift(
        self, name: str, weight: int, principal: str, force: bool = False
    ) -> StoredDeployment:
        """Move green to ``weight`` percent in one step (100 cuts over)."""

        report = self._shadow_report(name, skip=force)

        def decide(state: DeploymentState) -> rollout.Transition:
            if weight > state.green_weight and not force:
                check_shadow_gate(state, report)
            return rollout.shift(state, weight, force=force)

        return self.executor.run(name, principal, decide)

    def promote(
        self,
        name: str,
        principal: str,
        *,
        weight: int | None = None,
        plan: Plan | None = None,
        force: bool = False,
    ) -> StoredDeployment:
        """One step to ``weight`` (see :meth:`shift`), else the plan (see :meth:`start_plan`).

        Raises InvalidInput when both are given, and what those two raise.
        """
        if weight is None:
            return self.start_plan(name, principal, plan, force=force)
        if plan is not None:
            raise InvalidInput("give weight or plan, not both", field="plan")
        return self.shift(name, weight, principal, force=force)

    def revert(self, name: str, principal: str) -> StoredDeployment:
        """All traffic back to the last good release. Idempotent."""
        return self.executor.run(name, principal, rollout.revert)

    def retire_standby(self, name: str, principal: str) -> StoredDeployment:
        """Stop the standby slot early; revert to it is no longer possible afterwards."""
        return self.executor.run(name, principal, slots.retire_standby)

    def start_plan(
        self,
        name: str,
        principal: str,
        plan: Plan | None = None,
        *,
        force: bool = False,
        details: Mapping[str, Any] | None = None,
    ) -> StoredDeployment:
        """Store a promotion plan (the defaults when ``plan`` is None) and apply its first
        step; the rollout engine takes it from there. On a held plan: the operator's
        go-ahead to the next step. Returns at once. ``details`` go into the history event
        (a follow rule's trigger).

        Raises GateClosed (no passing comparison, unless forced), IllegalTransition (no
        green, a plan already running), InvalidInput (a bad plan), ElectionForbidden (this
        replica may not take part in the leader election, so no engine would run the plan).
        """
        self.engine_check()
        chosen = plan or self.default_plan()
        if force:
            chosen = replace(chosen, force=True)
        chosen = self._with_baseline(name, chosen, principal)
        now = self.wall_clock()
        report = self._shadow_report(name, skip=chosen.force)

        def decide(state: DeploymentState) -> rollout.Transition:
            if not chosen.force:
                check_shadow_gate(state, report)
            started = promotion.start(state, chosen, now)
            return replace(started, details={**started.details, **(details or {})})

        return self.executor.run(name, principal, decide)

    def _with_baseline(self, name: str, plan: Plan, principal: str) -> Plan:
        """``plan`` with its baseline release: a new release of blue's very parts, so its
        slot is a fresh process of blue's release (none when the plan compares with blue,
        or a plan already runs and this call resumes it)."""
        if plan.compare_with != "baseline" or plan.baseline_release is not None:
            return plan
        state = self.store.get_deployment(name).state
        if state.plan is not None or state.green is None:
            return plan  # resumed or refused by the transition, which says why
        blue = self.store.get_release(state.blue)
        parts = ResolvedRelease(
            blue.model_name,
            blue.model_version,
            blue.prompt_name,
            blue.prompt_version,
            blue.bundle_name,
            blue.bundle_version,
        )
        copy = self.store.add_release(
            f"{blue.name[:54]}-baseline",
            parts,
            blue.model_ref or blue.model_uri,
            blue.prompt_ref or blue.prompt_uri,
            self.clock(),
        )
        log.info("baseline release %s of blue %s made by %s", copy.id, blue.id, principal)
        return replace(plan, baseline_release=copy.id)

    def _shadow_report(self, name: str, *, skip: bool) -> ShadowReport | None:
        """The shadow report the live-traffic gate decides on, read (and the mirrored
        pairs drained) before the executor's locked step, so the step's decision is a
        pure function of the state and this report."""
        if skip or self.shadow_gate is None:
            return None
        return self.shadow_gate(name)

    def default_plan(self) -> Plan:
        """The plan ``promote {}`` runs: steps, bake, warm-up and analysis from settings."""
        return self._default_plan
