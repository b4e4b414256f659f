"""A load of concurrent clients on the data plane, recording every call, for the fault tests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx

from tests.support.flow import infer_body


@dataclass
class Load:
    """``clients`` threads calling ``url`` back to back; each call is recorded as
    (start, seconds, status, slot), status 0 for a connection failure."""

    url: str
    clients: int = 4
    timeout: float = 60.0
    calls: list[tuple[float, float, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as http:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    response = http.post(self.url, json=infer_body("Keep going. Please."))
                    status, slot = response.status_code, response.headers.get("x-bgserve-slot", "")
                except httpx.HTTPError:
                    status, slot = 0, ""
                self.calls.append((start, time.monotonic() - start, status, slot))

    def failures(self) -> list[tuple[float, float, int, str]]:
        """The calls that did not answer 200."""
        return [c for c in list(self.calls) if c[2] != 200]

    def answered_by(self, slot: str, since: float = 0.0) -> int:
        """Calls ``slot`` answered that started at or after ``since``."""
        return sum(1 for c in list(self.calls) if c[3] == slot and c[0] >= since)
