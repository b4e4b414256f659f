"""A live client that keeps calling a deployment's data plane and counts who answered."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True)
class Failure:
    """A request that failed: the release that answered it (``?`` when none said) and
    what went wrong."""

    release: str
    message: str

    def __str__(self) -> str:
        return f"release {self.release}: {self.message}"


@dataclass
class TrafficCounts:
    """What the client saw: answers per slot and per release, and every failure."""

    per_slot: Counter[str] = field(default_factory=Counter)
    per_release: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.per_slot.values()) + len(self.failures)

    @property
    def failed_by_release(self) -> Counter[str]:
        """Failed requests per release that answered them."""
        return Counter(failure.release for failure in self.failures)


class TrafficClient:
    """Sends OIP v2 requests in a background thread until stopped.

    ``pause`` is the wait between two requests; each answer is attributed to the slot
    and release named in its ``x-bgserve-slot`` / ``x-bgserve-release`` headers.
    """

    def __init__(
        self,
        url: str,
        inputs: dict[str, str] | Sequence[dict[str, str]],
        pause: float = 0.005,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        rotation = [inputs] if isinstance(inputs, dict) else list(inputs)
        self.bodies = [
            {
                "inputs": [
                    {"name": k, "datatype": "BYTES", "shape": [1], "data": [v]}
                    for k, v in one.items()
                ]
            }
            for one in rotation
        ]
        self._sent = 0
        self.pause = pause
        self.timeout = timeout
        self.counts = TrafficCounts()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def __enter__(self) -> TrafficClient:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> TrafficCounts:
        """Stop sending and return the counts."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout + 5)
        return self.snapshot()

    def snapshot(self) -> TrafficCounts:
        """A copy of the counts so far."""
        with self._lock:
            return TrafficCounts(
                Counter(self.counts.per_slot),
                Counter(self.counts.per_release),
                list(self.counts.failures),
            )

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set():
                self._send(client)
                if self.pause:
                    time.sleep(self.pause)

    def _send(self, client: httpx.Client) -> None:
        body = self.bodies[self._sent % len(self.bodies)]
        self._sent += 1
        try:
            response = client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            self._record_failure(f"{type(exc).__name__}: {exc}")
            return
        if response.status_code != 200:
            release = response.headers.get("x-bgserve-release", "?")
            self._record_failure(f"HTTP {response.status_code}: {response.text[:200]}", release)
            return
        with self._lock:
            self.counts.per_slot[response.headers.get("x-bgserve-slot", "?")] += 1
            self.counts.per_release[response.headers.get("x-bgserve-release", "?")] += 1

    def _record_failure(self, message: str, release: str = "?") -> None:
        with self._lock:
            self.counts.failures.append(Failure(release, message))
