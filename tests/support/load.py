"""A load of concurrent clients on the data plane, recording every call, for the fault tests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import httpx

from tests.support.flow import infer_body


class Call(NamedTuple):
    """One call: when it started (monotonic), how long it took, its status (0: no
    connection) and the slot role and release id its answer named."""

    start: float
    seconds: float
    status: int
    slot: str
    release: str
    detail: str = ""  # the start of a failed call's answer, or its error


@dataclass
class Load:
    """``clients`` threads calling ``url`` back to back, each call recorded as a
    :class:`Call`: the ``texts`` in turn, with ``headers``; the release is read from the
    answer's ``release_header``."""

    url: str
    clients: int = 4
    timeout: float = 60.0
    texts: tuple[str, ...] = ("Keep going. Please.",)
    headers: dict[str, str] = field(default_factory=dict)
    release_header: str = "x-bgserve-release"
    calls: list[Call] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout)

    def _run(self, turn: int) -> None:
        with httpx.Client(timeout=self.timeout, headers=self.headers) as http:
            while not self._stop.is_set():
                start = time.monotonic()
                detail = ""
                text = self.texts[turn % len(self.texts)]
                turn += 1
                try:
                    response = http.post(self.url, json=infer_body(text))
                    status, headers = response.status_code, response.headers
                    if status != 200:
                        detail = response.text[:300]
                except httpx.HTTPError as exc:
                    status, headers, detail = 0, httpx.Headers(), repr(exc)[:300]
                slot, release = (
                    headers.get("x-bgserve-slot", ""),
                    headers.get(self.release_header, ""),
                )
                seconds = time.monotonic() - start
                self.calls.append(Call(start, seconds, status, slot, release, detail))

    def failures(self) -> list[Call]:
        """The calls that did not answer 200."""
        return [c for c in list(self.calls) if c[2] != 200]

    def answered_by(self, slot: str, since: float = 0.0) -> int:
        """Calls ``slot`` answered that started at or after ``since``."""
        return sum(1 for c in list(self.calls) if c[3] == slot and c[0] >= since)


def share_of(load: Load, release: str, since: float, until: float) -> tuple[float, int]:
    """``release``'s share (percent) of the answered calls that started in [since, until),
    and how many those were."""
    calls = [c for c in list(load.calls) if since <= c.start < until and c.status == 200]
    answered = sum(1 for c in calls if c.release == release)
    return (100.0 * answered / len(calls) if calls else float("nan")), len(calls)


def settled_after(load: Load, returned: float, until: float, only: str) -> float:
    """Seconds from ``returned`` until every call is answered by release ``only``: the
    start of the last call answered by another one (0 if none was)."""
    other = [c.start for c in list(load.calls) if returned <= c.start < until and c.release != only]
    return max(other) - returned if other else 0.0


def hold(load: Load, calls: int, timeout: float = 120.0) -> float:
    """Wait until ``calls`` more calls were made; the time then."""
    target = len(load.calls) + calls
    deadline = time.monotonic() + timeout
    while len(load.calls) < target:
        assert time.monotonic() < deadline, "the load stalled"
        time.sleep(0.05)
    return time.monotonic()
