"""Waiting for a controller to report one object ready, the way controllers do: a watch.

One GET reads the object; a watch on that object alone (``fieldSelector=metadata.name``)
delivers every change from that resourceVersion on; the object is read again at every
resync (``kube_resync_seconds``), after an expired watch (410) or a dropped connection.
Where the API refuses watches (a proxy that allows only GET, say) it polls every
``kube_poll_interval_seconds`` instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from bgserve.errors import ReadinessTimeout
from bgserve.kube.client import KubeObjects, Obj

T = TypeVar("T")
# A Check sees the object as it now is (None once deleted) and returns a result when
# done, None to keep waiting, or raises to stop (a failed load, say).
Check = Callable[[Obj | None], T | None]
_WATCH_FAILURES = (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError)


@dataclass(frozen=True)
class Readiness:
    """Follows one object until a check accepts it or ``timeout`` passes.

    The clock and sleep are injectable for tests (sleep is used only when polling).
    """

    timeout: float
    resync: float
    poll_interval: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def until(
        self,
        objects: KubeObjects,
        name: str,
        check: Check[T],
        what: str,
        *,
        current: Obj | None = None,
    ) -> T:
        """Return ``check``'s first non-None result for object ``name`` of ``objects``.

        ``current``, the object as just written, saves the first read.

        Raises:
            ReadinessTimeout: no result within ``timeout``.
            BackendError: the object cannot be read, or whatever ``check`` raises.
        """
        deadline = self.clock() + self.timeout
        while True:
            obj, current = (current, None) if current is not None else (objects.get(name), None)
            result = check(obj)
            if result is not None:
                return result
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise ReadinessTimeout(
                    f"{what} did not become ready within {self.timeout:g}s",
                    details={"timeout_seconds": self.timeout},
                )
            version = (obj or {}).get("metadata", {}).get("resourceVersion")
            result = self._follow(objects, name, version, min(self.resync, remaining), check)
            if result is not None:
                return result

    def _follow(
        self, objects: KubeObjects, name: str, version: str | None, seconds: float, check: Check[T]
    ) -> T | None:
        """Run ``check`` on every change the watch delivers for ``seconds``; on a refused
        watch sleep one poll interval instead. None means: read again."""
        try:
            for obj in self._changes(objects, name, version, seconds):
                result = check(obj)
                if result is not None:
                    return result
        except _WATCH_FAILURES:
            self.sleep(min(self.poll_interval, seconds))
        return None

    def _changes(
        self, objects: KubeObjects, name: str, version: str | None, seconds: float
    ) -> Iterator[Obj | None]:
        r = objects.resource
        stream = watch.Watch().stream(
            objects.api.list_namespaced_custom_object,
            r.group,
            r.version,
            objects.namespace,
            r.plural,
            field_selector=f"metadata.name={name}",
            timeout_seconds=max(1, math.ceil(seconds)),
            _request_timeout=seconds + 10,
            **({"resource_version": version} if version else {}),
        )
        for event in stream:
            kind: str = event["type"]
            raw: Any = event["object"]
            if kind == "ERROR":  # expired resourceVersion and the like: read again
                return
            yield None if kind == "DELETED" else raw
