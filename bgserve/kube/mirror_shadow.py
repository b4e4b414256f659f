"""Shadow traffic on Kubernetes: the gateway mirrors, the slots record, bgserve pairs.

The weighted route gets the platform's mirror (:func:`bgserve.kube.mirror.with_mirror`)
while a deployment mirrors; blue's and green's slots record the exchanges they answer
(:mod:`bgserve.slot.exchanges`) while bgserve drains them, and the drained records are
paired by request id (:mod:`bgserve.backends.exchange_pairing`). A slot records only
with a drain token (``BGSERVE_KUBE_SLOT_TOKEN_SECRET`` / ``BGSERVE_KUBE_SLOT_TOKEN``).

Every pod of a slot is drained: the pods are the ready endpoints of the slot's predictor
Service (its EndpointSlices, listed again every :data:`POD_LIST_SECONDS`), so a request
recorded by any pod of blue finds its copy on any pod of green.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bgserve.backends.exchange_pairing import ExchangePairer
from bgserve.dataplane.wire import ShadowBatch
from bgserve.domain.state import Route
from bgserve.errors import BackendError, Conflict
from bgserve.kube.client import Obj, backend_error
from bgserve.kube.mirror import with_mirror
from bgserve.kube.objects import ANNOTATION_PREFIX
from bgserve.slot.exchanges import DRAIN_PATH, Exchange

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MAX_DRAIN_PAGES = 20
"""Pages one drain of one slot reads at most (the slot's record holds fewer)."""
POD_LIST_SECONDS = 10.0
"""How long a slot's list of pods is used before it is listed again. Drains come every
half second; listing EndpointSlices each time would put that load on the apiserver. A pod
gone meanwhile is skipped (and the list renewed at once if no pod answers); a new pod
starts recording at its first drain, at most this long after it became ready."""

MIRROR_ANNOTATION = ANNOTATION_PREFIX + "mirror"
"""On a route bgserve mirrors: the share and the release (``50% to release 7``), ``off``
once it stopped."""
RECORD_FIELDS = frozenset(Exchange.__dataclass_fields__)

SlotPods = Callable[[str, int], list[str]]
"""``pods(deployment, release_id)``: the base URLs of the slot's pods, none without a slot."""


class MirrorShadow:
    """Which deployments mirror what share to green, and their pairs.

    ``token`` is the slots' drain token (empty: shadow traffic is refused, saying which
    settings give one); ``pods`` finds a slot's pods; ``namespace`` is where the
    mirror's target lives. Safe from any thread.
    """

    def __init__(
        self,
        token: str,
        pods: SlotPods,
        namespace: str,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token, self.pods, self.namespace = token, pods, namespace
        self.clock = clock
        self._http = http or httpx.Client(timeout=httpx.Timeout(10.0, connect=3.0))
        self._percents: dict[str, int] = {}
        self._pairers: dict[str, ExchangePairer] = {}
        # (deployment, release id) -> (when listed, the slot's pods)
        self._pod_lists: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._lock = threading.Lock()

    def configure(self, deployment: str, percent: int, routes: Sequence[Route]) -> int:
        """Mirror ``percent`` (0 stops) of ``deployment``'s requests to the green of
        ``routes`` from the next route written, starting both slots' records first;
        returns the share mirrored before (to :meth:`restore` if writing fails).

        Raises Conflict without a drain token; BackendError without a green in
        ``routes``, or when a slot cannot be drained.
        """
        if percent:
            if not self.token:
                raise Conflict(
                    "shadow traffic on Kubernetes pairs the gateway's mirrored copies from "
                    "the slots' records, which need a drain token: set "
                    "BGSERVE_KUBE_SLOT_TOKEN_SECRET and BGSERVE_KUBE_SLOT_TOKEN (the slots "
                    "then restart with it)"
                )
            for release_id in pair_of(deployment, routes):
                self._drain(deployment, release_id)  # starts its record; nothing is mirrored yet
        with self._lock:
            previous = self._percents.pop(deployment, 0)
            if percent:
                self._percents[deployment] = percent
            else:
                self._pairers.pop(deployment, None)
                for key in [k for k in self._pod_lists if k[0] == deployment]:
                    del self._pod_lists[key]
        return previous

    def restore(self, deployment: str, percent: int) -> None:
        """Put back the share :meth:`configure` returned. Raises nothing."""
        with self._lock:
            if percent:
                self._percents[deployment] = percent
            else:
                self._percents.pop(deployment, None)

    def mirrored(
        self, deployment: str, route: Obj, routes: Sequence[Route], current: Obj | None = None
    ) -> Obj:
        """``route`` (the weighted route about to be written over ``current``) with the
        mirror to the green of ``routes`` while ``deployment`` mirrors; as it is otherwise.

        The route's :data:`MIRROR_ANNOTATION` says what it mirrors, and ``off`` once it
        stopped, for whoever reads the route (the apply itself removes the filter bgserve
        no longer writes: :func:`bgserve.kube.client.up_to_date`)."""
        percent = self._percents.get(deployment, 0)
        green = next((r.release_id for r in routes if r.role == "green"), None)
        if percent and green is not None:
            mirrored = with_mirror(route, deployment, green, percent, self.namespace)
            return _annotated(mirrored, f"{percent}% to release {green}")
        was = ((current or {}).get("metadata", {}).get("annotations") or {}).get(MIRROR_ANNOTATION)
        return _annotated(route, "off") if was not in (None, "off") else route

    def pairs(self, deployment: str, routes: Sequence[Route]) -> ShadowBatch:
        """The pairs completed since the previous call (an empty batch when
        ``deployment`` does not mirror). Raises BackendError when a slot cannot be
        drained."""
        roles = {r.role for r in routes}
        with self._lock:
            if not self._percents.get(deployment) or not {"blue", "green"} <= roles:
                return ShadowBatch([], 0, 0)
            # Kept across a change of share: records waiting for their other half stay.
            pairer = self._pairers.setdefault(deployment, ExchangePairer())
        blue, green = pair_of(deployment, routes)
        live, blue_unread = self._drain(deployment, blue)
        copies, green_unread = self._drain(deployment, green)
        unread = blue_unread + green_unread
        return pairer.pair((blue, green), live, copies, self.clock(), unread)

    def _drain(self, deployment: str, release_id: int) -> tuple[list[Mapping[str, Any]], int]:
        """The records of every pod of one slot, and how many they pushed out. A pod that
        cannot be drained while others can is skipped (it may be going away); raises
        BackendError when none can, on a list of pods renewed for the purpose."""
        listed_now, bases = self._slot_pods(deployment, release_id, renew=False)
        try:
            return self._drain_pods(deployment, release_id, bases)
        except BackendError:
            if listed_now:
                raise
        return self._drain_pods(
            deployment, release_id, self._slot_pods(deployment, release_id, renew=True)[1]
        )

    def _slot_pods(
        self, deployment: str, release_id: int, *, renew: bool
    ) -> tuple[bool, list[str]]:
        """Whether the slot's pods were listed for this call, and the pods."""
        key, now = (deployment, release_id), self.clock()
        with self._lock:
            listed = self._pod_lists.get(key)
        if not renew and listed is not None and now - listed[0] < POD_LIST_SECONDS:
            return False, listed[1]
        pods = self.pods(deployment, release_id)
        with self._lock:
            self._pod_lists[key] = (now, pods)
        return True, pods

    def _drain_pods(
        self, deployment: str, release_id: int, bases: list[str]
    ) -> tuple[list[Mapping[str, Any]], int]:
        if not bases:
            raise BackendError(f"release {release_id} of {deployment} has no slot to drain")
        records: list[Mapping[str, Any]] = []
        unread, failures = 0, []
        for base in bases:
            try:
                pod_records, pod_unread = self._drain_pod(base, deployment, release_id)
            except BackendError as exc:
                failures.append(exc)
                continue
            records += pod_records
            unread += pod_unread
        if len(failures) == len(bases):
            raise failures[0]
        for failure in failures:
            log.warning("%s", failure.message)
        return records, unread

    def _drain_pod(
        self, base: str, deployment: str, release_id: int
    ) -> tuple[list[Mapping[str, Any]], int]:
        records: list[Mapping[str, Any]] = []
        unread = 0
        for _ in range(MAX_DRAIN_PAGES):
            page = self._page(base.rstrip("/") + DRAIN_PATH, deployment, release_id)
            records += page["exchanges"]
            unread += int(page["unread"])
            if not page["more"]:
                break
        return records, unread

    def _page(self, url: str, deployment: str, release_id: int) -> dict[str, Any]:
        what = f"the exchange records of {deployment}'s release {release_id} ({url})"
        try:
            answer = self._http.post(url, headers={"authorization": f"Bearer {self.token}"})
        except httpx.HTTPError as exc:
            raise BackendError(f"cannot drain {what}: {exc}") from exc
        if answer.status_code == 401:
            raise BackendError(
                f"the slot refused bgserve's token for {what}: BGSERVE_KUBE_SLOT_TOKEN must "
                "hold the value of the Secret BGSERVE_KUBE_SLOT_TOKEN_SECRET names"
            )
        if answer.status_code != 200:
            hint = " (a slot started without a drain token)" if answer.status_code == 404 else ""
            raise BackendError(f"draining {what} answered HTTP {answer.status_code}{hint}")
        try:
            return records_page(answer.json())
        except ValueError as exc:
            raise BackendError(f"{what} answered something else than records: {exc}") from exc

    def close(self) -> None:
        """Close the HTTP client. Idempotent."""
        self._http.close()


def _annotated(route: Obj, mirror: str) -> Obj:
    metadata = dict(route["metadata"])
    metadata["annotations"] = {**metadata.get("annotations", {}), MIRROR_ANNOTATION: mirror}
    return {**route, "metadata": metadata}


def records_page(body: object) -> dict[str, Any]:
    """``body`` if it is a drain page of well-formed records. Raises ValueError."""
    if not isinstance(body, dict) or not isinstance(body.get("exchanges"), list):
        raise ValueError("no list of exchanges")
    if not isinstance(body.get("unread"), int) or not isinstance(body.get("more"), bool):
        raise ValueError("no 'unread' count or 'more' flag")
    for record in body["exchanges"]:
        if not isinstance(record, dict) or not record.keys() >= RECORD_FIELDS:
            raise ValueError(f"a record without {sorted(RECORD_FIELDS)}")
    return body


def ready_pods(discovery: client.DiscoveryV1Api, namespace: str, service: str) -> list[str]:
    """The base URLs of ``service``'s ready endpoints, from its EndpointSlices (one per
    address and slice port). Raises BackendError when the slices cannot be listed."""
    try:
        slices = discovery.list_namespaced_endpoint_slice(
            namespace, label_selector=f"{SERVICE_NAME_LABEL}={service}"
        )
    except ApiException as exc:
        raise backend_error(exc, f"listing the EndpointSlices of Service {service}") from exc
    urls = []
    for endpoint_slice in slices.items:
        for port in endpoint_slice.ports or ():
            for endpoint in endpoint_slice.endpoints or ():
                if endpoint.conditions is None or endpoint.conditions.ready is not False:
                    urls += [f"http://{_host(a)}:{port.port}" for a in endpoint.addresses]
    return urls


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def pair_of(deployment: str, routes: Sequence[Route]) -> tuple[int, int]:
    """Blue's and green's release ids in ``routes``. Raises BackendError without both."""
    roles = {r.role: r.release_id for r in routes}
    if "blue" not in roles or "green" not in roles:
        raise BackendError(f"{deployment} has no blue and green route to mirror between")
    return roles["blue"], roles["green"]
