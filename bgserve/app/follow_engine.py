"""The follow engine: the leader's loop that hands due follow rules to the handler and, at
an interval, polls the followed aliases.

Every ``interval`` seconds (at once when :meth:`FollowEngine.wake` is called, as the
webhook route does) it reads the stored rules and starts a handling for each one that is
due (:func:`bgserve.domain.follow.is_due`), on a small pool, never two of one deployment
at once, so a slow comparison on one deployment never delays another's. Every
``poll_seconds`` (0: never) it reads where each rule's aliases point; one that differs
from what the rule last saw marks the rule due, exactly as a webhook delivery would.

Only the leader runs this loop (:class:`bgserve.compose.Components` starts it with the
lead): any replica accepts webhook deliveries, which only mark rules due in the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

from bgserve.app.follow import FollowHandler, Outcome
from bgserve.app.ports import DeploymentReader
from bgserve.domain.follow import is_due, progress_json, progress_of
from bgserve.domain.follow_rule import FollowRule
from bgserve.errors import BgserveError
from bgserve.store.follow_store import StoredRule

log = logging.getLogger("bgserve.follow")

RuleLoader = Callable[[StoredRule], FollowRule]


class RuleStore(Protocol):
    """Where rules, their triggers and progress are kept (the follow store)."""

    def get_rule(self, deployment: str) -> StoredRule | None: ...

    def list_rules(self) -> list[StoredRule]: ...

    def trigger(self, deployment: str, trigger: dict[str, Any], now: datetime) -> None: ...

    def save_progress(
        self, deployment: str, progress: dict[str, Any], handled_seq: int, now: datetime
    ) -> None: ...


class FollowEngine:
    """Runs due follow rules through the handler, on threads of its own."""

    def __init__(
        self,
        rules: RuleStore,
        deployments: DeploymentReader,
        handler: FollowHandler,
        load: RuleLoader,
        *,
        interval: float,
        poll_seconds: float,
        clock: Callable[[], float] = time.time,
        workers: int = 2,
    ) -> None:
        self.rules = rules
        self.deployments = deployments
        self.handler = handler
        self.load = load
        self.interval = interval
        self.poll_seconds = poll_seconds
        self.clock = clock
        self._next_poll = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running: dict[str, Future[None]] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bgserve-follow")

    def start(self) -> None:
        """Run the loop in the background until :meth:`stop`. Idempotent."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="bgserve-follow", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop (handlings under way finish on their own). Idempotent."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def close(self) -> None:
        """Stop the loop and drop the handlings not started yet. Idempotent."""
        self.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def wake(self) -> None:
        """Look at the rules now rather than at the next interval (a delivery came)."""
        self._wake.set()

    def wait_idle(self, timeout: float | None = None) -> None:
        """Wait for the handlings under way (tests). Idempotent."""
        for future in list(self._running.values()):
            future.exception(timeout)

    def tick(self) -> None:
        """One pass: poll if it is time, then start the due handlings. Never raises."""
        try:
            stored = self.rules.list_rules()
        except BgserveError as exc:
            log.error("the follow engine cannot read the rules: %s", exc.message)
            return
        now = self.clock()
        if self.poll_seconds > 0 and now >= self._next_poll:
            self._next_poll = now + self.poll_seconds
            for row in stored:
                self._poll(row)
            stored = self._reread(stored)
        for row in stored:
            if not self._busy(row.deployment) and self._due(row, now):
                self._running[row.deployment] = self._pool.submit(self._handle, row.deployment)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._wake.wait(self.interval)
            self._wake.clear()

    def _reread(self, stored: list[StoredRule]) -> list[StoredRule]:
        try:
            return self.rules.list_rules()
        except BgserveError:
            return stored

    def _busy(self, deployment: str) -> bool:
        running = self._running.get(deployment)
        return running is not None and not running.done()

    def _due(self, row: StoredRule, now: float) -> bool:
        progress = progress_of(row.progress)
        version = None
        if progress.waiting_version is not None:
            try:
                version = self.deployments.get_deployment(row.deployment).state.version
            except BgserveError:
                return False
        return is_due(row.pending_seq, row.handled_seq, progress, version, now)

    def _poll(self, row: StoredRule) -> None:
        """Mark the rule due when an alias points elsewhere than the rule last saw (a rule
        already due is left to its handling, which reads the aliases itself)."""
        if row.pending_seq > row.handled_seq:
            return
        try:
            rule = self.load(row)
            seen = progress_of(row.progress).aliases
            for followed, version in self.handler.aliases(rule).items():
                if followed.uri in seen and seen[followed.uri] == version:
                    continue
                trigger = {"source": "poll", "uri": followed.uri, "version": version, "at": _iso()}
                self.rules.trigger(row.deployment, trigger, datetime.now(UTC))
                return
        except (BgserveError, KeyError, ValueError, TypeError) as exc:
            log.warning("polling the aliases of %s failed: %s", row.deployment, exc)

    def _handle(self, deployment: str) -> None:
        """Handle the rule of ``deployment`` as stored now and store what came of it."""
        try:
            row = self.rules.get_rule(deployment)
            if row is None:
                return
            outcome = self._run(row)
            settled = row.pending_seq if outcome.settled else row.handled_seq
            now = datetime.now(UTC)
            self.rules.save_progress(deployment, progress_json(outcome.progress), settled, now)
        except BgserveError as exc:
            log.error("the follow rule of %s could not be stored: %s", deployment, exc.message)
        except Exception:
            log.exception("handling the follow rule of %s failed", deployment)

    def _run(self, row: StoredRule) -> Outcome:
        progress = progress_of(row.progress)
        try:
            rule = self.load(row)
        except (KeyError, ValueError, TypeError) as exc:
            log.error("the follow rule of %s cannot be read (%s): ignored", row.deployment, exc)
            unreadable = {"action": "failed", "reason": f"the stored rule cannot be read: {exc}"}
            return Outcome(replace(progress, outcome=unreadable))
        return self.handler.handle(rule, progress, row.trigger or {})


def _iso() -> str:
    return datetime.now(UTC).isoformat()
