"""The running bgserve's parts (:class:`Components`) and how they are built from settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from bgserve.app.comparer import Comparer
from bgserve.app.engine import RolloutEngine
from bgserve.app.executor import Executor
from bgserve.app.follow_rules import Following
from bgserve.app.leadership import Leadership, Lease, Timing
from bgserve.app.prompt_validation import PromptValidator
from bgserve.app.recovery import Recovery
from bgserve.app.service import Service, utc_now
from bgserve.app.shadow import ShadowCollector
from bgserve.app.warmup import GreenWarmer
from bgserve.backends.base import Backend, SlotWatcher
from bgserve.compose.backends import build_backend, build_traffic_source
from bgserve.compose.election import build_lease, claim_local_state, timing_of
from bgserve.compose.follow import build_following
from bgserve.compose.parts import compare_settings_of, comparer_parts_of, shadow_settings_of
from bgserve.compose.stores import build_registry, build_store
from bgserve.registry.mlflow_registry import MlflowRegistry, bound_mlflow_http
from bgserve.settings import Settings
from bgserve.store import Store
from bgserve.store.serve_claim import NO_CLAIM, Claim


@dataclass
class Components:
    """Everything a running bgserve holds, started and closed together."""

    settings: Settings
    store: Store
    registry: MlflowRegistry
    backend: Backend
    executor: Executor
    service: Service
    comparer: Comparer
    validator: PromptValidator
    recovery: Recovery
    engine: RolloutEngine
    shadow: ShadowCollector
    lease: Lease
    timing: Timing
    claim: Claim
    following: Following
    leadership: Leadership = field(init=False)

    def __post_init__(self) -> None:
        self.leadership = Leadership(self.lease, self.timing, self.lead, self.follow)
        self.service.engine_check = self.leadership.check_electable

    def start(self) -> None:
        """Watch the slots, then take part in leader election: the leader restores every
        stored deployment on the backend and runs the rollout engine (which resumes plans
        under way); a replica that is not the leader only answers calls."""
        if isinstance(self.backend, SlotWatcher):
            self.backend.watch_slots(self._slot_lost)
        self.leadership.start()
        self.shadow.start()

    def lead(self) -> None:
        """What the leader alone does: restore deployments, resume their shadow traffic
        (once their routes are back), advance plans and handle follow rules."""
        self.recovery.reconcile()
        self.shadow.lead()
        self.engine.start()
        self.following.engine.start()

    def follow(self) -> None:
        """Stop the leader's work (the lease was lost or bgserve stops)."""
        self.following.engine.stop()
        self.engine.stop()
        self.shadow.follow()

    def _slot_lost(self, deployment: str, release_id: int) -> None:
        # Every replica watches; the leader alone restarts (others would restart it twice).
        if self.leadership.is_leader:
            self.recovery.slot_lost(deployment, release_id)

    def close(self) -> None:
        """Stop recovering, stop the backend (and the local slots), release the database.

        Recoveries under way are cut short by the backend closing; they are waited for, so
        no slot they start outlives bgserve and none is recorded as a failed restart.
        """
        self.leadership.close()
        self.following.engine.close()
        self.engine.close()
        self.shadow.close()
        self.recovery.close(timeout=0)
        try:
            self.backend.close()
        finally:
            self.recovery.wait_idle(self.settings.slot_ready_timeout_seconds)
            self.store.close()
            self.claim.release()


def build_components(
    settings: Settings, backend: Backend | None = None, claim: Claim | None = None
) -> Components:
    """Build every part from ``settings``; ``backend`` replaces the configured one, and
    ``claim`` is the state's claim when the caller took it already.

    Raises Conflict when another ``serve`` already runs the local backend on this state
    (a backend given here is the caller's own: it needs no claim).
    """
    if claim is None:
        claim = claim_local_state(settings) if backend is None else NO_CLAIM
    try:
        store = build_store(settings)
    except Exception:
        claim.release()
        raise
    mlflow_http = bound_mlflow_http(
        settings.mlflow_http_max_retries,
        settings.mlflow_http_timeout_seconds,
        settings.mlflow_http_backoff_factor,
    )
    registry = build_registry(settings)
    try:
        backend = backend or build_backend(settings, mlflow_http, registry)
        lease = build_lease(settings)
    except Exception:
        store.close()
        claim.release()
        raise
    executor = Executor(
        store, backend, registry, clock=utc_now, lock_timeout=settings.lock_timeout_seconds
    )
    shadow = ShadowCollector(
        backend,
        store,
        shadow_settings_of(settings.shadow, settings.compare),
        store,
        leading=False,  # until this replica takes the lead
    )
    service = Service(
        store,
        registry,
        backend,
        executor,
        default_plan=settings.plan.plan(),
        shadow_gate=shadow.gate_report,
    )
    compare_settings = compare_settings_of(settings.compare)
    parts = comparer_parts_of(settings.compare, registry)
    comparer = Comparer(
        compare_settings,
        store,
        store,
        registry,
        backend,
        executor,
        logger=parts.logger,
        judge=parts.judge,
        scorers=parts.scorers,
        prompts=parts.prompts,
    )
    validator = PromptValidator(compare_settings, store, store, registry, logger=parts.logger)
    recovery = Recovery(
        executor,
        store,
        store,
        backend,
        restart_limit=settings.slot_restart_limit,
        restart_window=settings.slot_restart_window_seconds,
    )
    engine = RolloutEngine(
        executor,
        store,
        build_traffic_source(settings, backend),
        interval=settings.engine_interval_seconds,
        shadow=shadow,
        warmer=GreenWarmer(store, comparer, concurrency=settings.compare.concurrency),
    )
    return Components(
        settings,
        store,
        registry,
        backend,
        executor,
        service,
        comparer,
        validator,
        recovery,
        engine,
        shadow,
        lease,
        timing_of(settings.leader),
        claim,
        build_following(settings, store, registry, service, comparer, shadow),
    )
