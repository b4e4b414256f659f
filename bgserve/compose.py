"""The composition root: the one place that builds store, registry, backend and service."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bgserve.app.comparer import Comparer
from bgserve.app.engine import RolloutEngine
from bgserve.app.executor import Executor
from bgserve.app.leadership import Leadership, Lease, Timing
from bgserve.app.ports import TrafficSource
from bgserve.app.prompt_validation import PromptValidator
from bgserve.app.recovery import Recovery
from bgserve.app.service import Service, utc_now
from bgserve.app.shadow import ShadowCollector
from bgserve.backends.base import Backend, SlotWatcher
from bgserve.compose_settings import (
    analysis_settings_of,
    compare_settings_of,
    comparer_parts_of,
    shadow_settings_of,
)
from bgserve.election import build_lease, claim_local_state, timing_of
from bgserve.errors import InvalidInput
from bgserve.registry.mlflow_registry import MlflowRegistry
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
    leadership: Leadership = field(init=False)

    def __post_init__(self) -> None:
        self.leadership = Leadership(self.lease, self.timing, self.lead, self.follow)

    def start(self) -> None:
        """Watch the slots, then take part in leader election: the leader restores every
        stored deployment on the backend and runs the rollout engine (which resumes plans
        under way); a replica that is not the leader only answers calls."""
        if isinstance(self.backend, SlotWatcher):
            self.backend.watch_slots(self._slot_lost)
        self.leadership.start()
        self.shadow.start()

    def lead(self) -> None:
        """What the leader alone does: restore deployments and advance plans."""
        self.recovery.reconcile()
        self.engine.start()

    def follow(self) -> None:
        """Stop the leader's work (the lease was lost or bgserve stops)."""
        self.engine.stop()

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
        self.engine.close()
        self.shadow.close()
        self.recovery.close(timeout=0)
        try:
            self.backend.close()
        finally:
            self.recovery.wait_idle(self.settings.slot_ready_timeout_seconds)
            self.store.close()
            self.claim.release()


def build_backend(settings: Settings) -> Backend:
    """The backend ``settings.backend`` names. Raises InvalidInput for an unknown one."""
    if settings.backend == "local":
        from bgserve.backends.local.backend import LocalBackend

        return LocalBackend(
            settings.data_host,
            settings.data_port,
            settings.slot_ready_timeout_seconds,
            env=_mlflow_env(settings),
            log_dir=settings.home / "slot-logs",
            connect_timeout=settings.upstream_connect_timeout_seconds,
            first_byte_timeout=settings.upstream_first_byte_timeout_seconds,
            upstream_timeout=settings.upstream_timeout_seconds,
            stream_idle_timeout=settings.upstream_stream_idle_timeout_seconds,
            deployment_timeouts=settings.deployment_timeouts,
            outlier_failures=settings.outlier_consecutive_failures,
            data_token=settings.data_token or None,
            sticky_header=settings.sticky_header,
            shadow_green_nice=settings.shadow_green_nice,
        )
    if settings.backend == "kserve":
        from bgserve.backends.kube.kserve.backend import KServeBackend

        return KServeBackend(settings)
    if settings.backend == "seldon":
        from bgserve.backends.kube.seldon import seldon_backend

        return seldon_backend(settings)
    if settings.backend == "memory":
        from bgserve.backends.memory import MemoryBackend

        return MemoryBackend()
    raise InvalidInput(f"backend {settings.backend!r} is not available yet", field="backend")


def _mlflow_env(settings: Settings) -> dict[str, str]:
    """The MLflow variables slot processes need to load bundles from the same registry."""
    env = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = settings.resolved_mlflow_tracking_uri
    if settings.mlflow_registry_uri:
        env["MLFLOW_REGISTRY_URI"] = settings.mlflow_registry_uri
    return env


def build_store(settings: Settings) -> Store:
    """The state database ``settings`` names (for entry points that need only the store)."""
    return Store(settings.resolved_state_url)


def build_registry(settings: Settings) -> MlflowRegistry:
    """The MLflow registry ``settings`` names: ``MLFLOW_TRACKING_URI``, else the SQLite
    file ``mlflow.db`` in ``home``, so every entry point sees the same registry."""
    return registry_at(
        settings.resolved_mlflow_tracking_uri,
        settings.mlflow_registry_uri,
        bundle_name_template=settings.bundle_name_template,
    )


def registry_at(
    tracking_uri: str | None,
    registry_uri: str | None = None,
    *,
    bundle_name_template: str = "bgserve.{release}",
    artifact_location: str | None = None,
) -> MlflowRegistry:
    """A registry on explicit MLflow URIs; a SQLite file's directory is created first."""
    uri = tracking_uri or ""
    sqlite_file = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if uri.startswith("sqlite:///") and sqlite_file not in ("", ":memory:"):
        Path(sqlite_file).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return MlflowRegistry(
        tracking_uri=tracking_uri,
        registry_uri=registry_uri,
        bundle_name_template=bundle_name_template,
        artifact_location=artifact_location,
    )


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
    registry = build_registry(settings)
    try:
        backend = backend or build_backend(settings)
        lease = build_lease(settings)
    except Exception:
        store.close()
        claim.release()
        raise
    executor = Executor(
        store, backend, registry, clock=utc_now, lock_timeout=settings.lock_timeout_seconds
    )
    shadow = ShadowCollector(backend, store, shadow_settings_of(settings))
    service = Service(
        store,
        registry,
        backend,
        executor,
        plan_steps=settings.plan_steps,
        plan_bake_s=settings.plan_bake_s,
        analysis=analysis_settings_of(settings),
        shadow_gate=shadow.gate_report,
    )
    compare_settings = compare_settings_of(settings)
    comparer_parts = comparer_parts_of(settings, registry)
    comparer = Comparer(
        compare_settings, store, store, registry, backend, executor, **comparer_parts
    )
    validator = PromptValidator(
        compare_settings, store, store, registry, logger=comparer_parts["logger"]
    )
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
        timing_of(settings),
        claim,
    )


def build_traffic_source(settings: Settings, backend: Backend) -> TrafficSource | None:
    """Where the rollout engine reads live traffic: the backend's own counts if it keeps
    them (the local data plane, the memory backend), else Prometheus when configured."""
    if isinstance(backend, TrafficSource):
        return backend
    if settings.prometheus_url and settings.backend in ("kserve", "seldon"):
        from bgserve.backends.kube.prometheus import PrometheusTraffic

        return PrometheusTraffic(settings)
    return None
