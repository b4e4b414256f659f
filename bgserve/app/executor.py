"""The one place that sequences side effects: every change to a deployment goes through here.

The order is always the same (:meth:`Executor.run`):

1. **lock** the deployment (an in-process lock per name, with a timeout);
2. **decide**: read the stored state and let a pure function of the domain return a
   :class:`~bgserve.domain.rollout.Transition` (new state, actions, reason);
3. **act**: perform the actions that must succeed before the change is true (start slots,
   move weights); if one fails, undo the ones already done, so traffic stays where it was
   and no slot this step started is left running;
4. **persist** the new state and its history event in one transaction, with the version
   check (a stale write is refused; traffic is then put back as the store says);
5. **follow up**: the actions that must not undo the change (retire slots, move registry
   aliases); a failure is recorded in the history, never raised.

Comparisons, recovery and the service all hand their decisions to this executor; none of
them writes to the store or moves traffic on its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from bgserve.app.ports import AliasMover
from bgserve.backends.base import Backend, RouteReports
from bgserve.domain.rollout import (
    Action,
    DeploymentState,
    EnsureSlot,
    MoveAliases,
    RetireSlot,
    Route,
    SetRoutes,
    Transition,
)
from bgserve.errors import BgserveError, Conflict, NotFound
from bgserve.store import Store, StoredDeployment

log = logging.getLogger("bgserve.executor")

SYSTEM = "bgserve"
"""The principal of every change bgserve makes on its own."""

Decide = Callable[[DeploymentState], Transition]


class Executor:
    """Runs transitions: lock, decide, act, persist, follow up."""

    def __init__(
        self,
        store: Store,
        backend: Backend,
        aliases: AliasMover,
        clock: Callable[[], datetime],
        lock_timeout: float,
    ) -> None:
        self.store = store
        self.backend = backend
        self.aliases = aliases
        self.clock = clock
        self.lock_timeout = lock_timeout
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def run(self, name: str, principal: str, decide: Decide) -> StoredDeployment:
        """Decide on the stored state of ``name`` and carry the transition out.

        Raises what ``decide`` raises (nothing done then), Conflict when the lock is busy,
        StaleWrite, and the backend's errors (after undoing what the step started).
        """
        with self.locked(name):
            stored = self.store.get_deployment(name)
            return self._execute(stored, decide(stored.state), principal)

    def create(self, transition: Transition, principal: str) -> StoredDeployment:
        """Carry out the transition that creates a deployment. Raises Conflict if it exists."""
        name = transition.state.name
        with self.locked(name):
            self._refuse_existing(name)
            undo = self._act(name, (), _before_commit(transition.actions))
            try:
                stored = self.store.create_deployment(
                    transition.state,
                    self.clock(),
                    principal,
                    transition.reason,
                    self._details(name, transition),
                )
            except BaseException:
                undo()
                raise
            self._follow_up(stored, transition)
            return stored

    def realise(self, state: DeploymentState) -> None:
        """Make the backend serve ``state`` as stored (start-up): slots started or re-adopted,
        weights applied. Changes nothing stored. Raises the backend's errors."""
        with self.locked(state.name):
            for route in state.routes():
                self.backend.ensure_slot(state.name, self.store.get_release(route.release_id))
            self.backend.set_routes(state.name, state.routes())

    @contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Hold the deployment's lock in this process, then in the store against other
        replicas. Raises Conflict after the lock timeout."""
        with self._locks_guard:
            lock = self._locks.setdefault(name, threading.Lock())
        if not lock.acquire(timeout=self.lock_timeout):
            raise Conflict(
                f"another operation on {name!r} has held it for over {self.lock_timeout:g}s: "
                "retry later",
                hint="retry",
            )
        try:
            with self.store.hold(name, self.lock_timeout):
                yield
        finally:
            lock.release()

    # the steps

    def _execute(
        self, stored: StoredDeployment, transition: Transition, principal: str
    ) -> StoredDeployment:
        name = stored.state.name
        if not transition.changed:
            self._act(name, stored.state.routes(), transition.actions)
            if transition.record:
                self._record(stored.state, transition, principal)
            return stored
        undo = self._act(name, stored.state.routes(), _before_commit(transition.actions))
        try:
            saved = self.store.save_deployment(
                stored.state,
                transition.state,
                now=self.clock(),
                principal=principal,
                action=transition.action,
                reason=transition.reason,
                details=self._details(name, transition),
                last_comparison=None if transition.report is None else dict(transition.report),
            )
        except BaseException:
            undo()
            raise
        self._follow_up(saved, transition)
        return saved

    def _details(self, name: str, transition: Transition) -> dict[str, Any] | None:
        """The history event's details: the transition's, and what the router reported of
        the route it applied (a gateway's generation taken), when it reports."""
        details = dict(transition.details)
        routed = any(isinstance(a, SetRoutes) for a in transition.actions)
        if routed and isinstance(self.backend, RouteReports):
            report = self.backend.route_report(name)
            if report is not None:
                details["route"] = dict(report)
        return details or None

    def _act(
        self, name: str, routes_before: tuple[Route, ...], actions: tuple[Action, ...]
    ) -> Callable[[], None]:
        """Perform ``actions`` in order; on failure undo the done ones and re-raise.

        Returns the undo of everything done, for a later step that fails.
        """
        started: list[int] = []
        routed = False

        def undo() -> None:
            self._undo(name, routes_before if routed else None, started)

        for action in actions:
            try:
                if isinstance(action, EnsureSlot):
                    if self._ensure(name, action.release_id):
                        started.append(action.release_id)
                elif isinstance(action, SetRoutes):
                    self.backend.set_routes(name, action.routes)
                    routed = True
                else:
                    self._follow_up_action(name, action)
            except BaseException:
                undo()
                raise
        return undo

    def _ensure(self, name: str, release_id: int) -> bool:
        """Ensure the slot; True if this call started it (so an undo must retire it)."""
        existed = self.backend.slot_info(name, release_id) is not None
        self.backend.ensure_slot(name, self.store.get_release(release_id))
        return not existed

    def _undo(self, name: str, routes: tuple[Route, ...] | None, started: list[int]) -> None:
        """Put traffic back on ``routes`` and retire the slots this step started.

        Best effort: a failing undo is logged, and the original error is what the caller
        sees. With no routes before (a deployment being created) routing is cleared.
        """
        current = _current_routes(self.store, name, routes or ())
        try:
            if routes is not None:
                self.backend.set_routes(name, current)
        except BgserveError as exc:
            log.error("could not put the traffic of %s back: %s", name, exc.message)
        still_routed = {r.release_id for r in current}
        for release_id in reversed([r for r in started if r not in still_routed]):
            try:
                self.backend.retire_slot(name, release_id)
            except BgserveError as exc:
                log.error("could not retire slot %s of %s: %s", release_id, name, exc.message)

    def _follow_up(self, saved: StoredDeployment, transition: Transition) -> None:
        name = saved.state.name
        for action in transition.actions:
            if not isinstance(action, RetireSlot | MoveAliases):
                continue
            try:
                self._follow_up_action(name, action)
            except BgserveError as exc:
                # The change is already true; a lingering slot or stale alias is recorded,
                # never a reason to undo it.
                log.warning("on %s: %s failed: %s", name, action, exc.message)
                self._record_failed_follow_up(saved.state, action, exc)

    def _follow_up_action(self, name: str, action: Action) -> None:
        if isinstance(action, RetireSlot):
            self.backend.retire_slot(name, action.release_id)
        elif isinstance(action, MoveAliases):
            live = self.store.get_release(action.live)
            previous = None if action.previous is None else self.store.get_release(action.previous)
            self.aliases.move_aliases(name, live, previous)

    def _record_failed_follow_up(
        self, state: DeploymentState, action: Action, exc: BgserveError
    ) -> None:
        what = "retire slot" if isinstance(action, RetireSlot) else "move MLflow aliases"
        failed = Transition(
            "follow-up-failed",
            state,
            reason=f"could not {what}: {exc.message}",
            details={"action": repr(action)},
        )
        self._record(state, failed, SYSTEM)

    def _record(self, state: DeploymentState, transition: Transition, principal: str) -> None:
        try:
            self.store.append_event(
                state,
                now=self.clock(),
                principal=principal,
                action=transition.action,
                reason=transition.reason,
                details=dict(transition.details) or None,
            )
        except BgserveError:
            log.exception("could not record %s on %s", transition.action, state.name)

    def _refuse_existing(self, name: str) -> None:
        try:
            self.store.get_deployment(name)
        except NotFound:
            return
        raise Conflict(
            f"deployment {name!r} already exists: stage a new release on it, or choose "
            "another name",
            hint="stage",
        )


def _before_commit(actions: tuple[Action, ...]) -> tuple[Action, ...]:
    return tuple(a for a in actions if isinstance(a, EnsureSlot | SetRoutes))


def _current_routes(store: Store, name: str, fallback: tuple[Route, ...]) -> tuple[Route, ...]:
    """The routes the store holds now (another writer may have won), else ``fallback``."""
    try:
        return store.get_deployment(name).state.routes()
    except BgserveError:
        return fallback
