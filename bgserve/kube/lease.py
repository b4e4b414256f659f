"""Leader election on a ``coordination.k8s.io/v1`` Lease, as Kubernetes controllers do it.

Expiry is judged on this replica's own clock, from the moment it last saw the lease record
change (client-go's rule), so clocks that disagree between nodes cannot make two leaders.
Every write carries the ``resourceVersion`` it read: of two replicas racing for a free
lease, the API server lets exactly one win (409 for the other).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bgserve.errors import ElectionForbidden
from bgserve.kube.client import backend_error

log = logging.getLogger("bgserve.leader")


class KubeLease:
    """A named Lease in one namespace; see :class:`bgserve.app.leadership.Lease`.

    Needs get, create and update on ``leases`` in the namespace (the manifests' leader
    election Role grants exactly that).
    """

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.identity = identity
        self._api = client.CoordinationV1Api(api)
        self._namespace = namespace
        self._name = name
        self._duration = max(1, round(lease_duration))
        self._clock = clock
        self._observed: tuple[str | None, str | None] | None = None
        self._observed_at = 0.0
        self._holder: str | None = None

    def try_acquire_or_renew(self) -> bool:
        """Raises BackendError when the API server cannot be reached or refuses the call."""
        verb = "get"
        try:
            lease = self._read()
            if lease is None:
                verb = "create"
                return self._create()
            self._observe(lease)
            spec = lease.spec
            held_by_other = bool(spec.holder_identity) and spec.holder_identity != self.identity
            if held_by_other and not self._expired(spec):
                return False
            verb = "update"
            return self._take(lease)
        except ApiException as exc:
            if exc.status == 403:
                raise self._forbidden(verb, exc) from exc
            raise backend_error(exc, f"renewing the leader lease {self._name}") from exc
        except OSError as exc:
            raise backend_error(exc, f"renewing the leader lease {self._name}") from exc

    def holder(self) -> str | None:
        return self._holder

    def _forbidden(self, verb: str, exc: ApiException) -> ElectionForbidden:
        return ElectionForbidden(
            f"this replica may not take part in leader election: the API server refused "
            f"'{verb}' on leases.coordination.k8s.io in namespace {self._namespace} (HTTP 403), "
            "so it can never run plans; grant get, create and update on leases to bgserve's "
            "service account with the Role and RoleBinding of "
            "manifests/base/leader-election.yaml (kubectl apply -k manifests/base)",
            details={"status": 403, "verb": verb, "resource": "leases.coordination.k8s.io"},
        )

    def release(self) -> None:
        """Empty the holder when this replica holds it, so a successor need not wait."""
        if self._holder != self.identity:
            return  # never held (or lost): nothing to give up, no call to make
        try:
            lease = self._read()
            if lease is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            self._api.replace_namespaced_lease(self._name, self._namespace, lease)
            self._holder = None
        except (ApiException, OSError) as exc:
            log.warning("could not release the leader lease %s: %s", self._name, exc)

    def _read(self) -> client.V1Lease | None:
        try:
            return self._api.read_namespaced_lease(self._name, self._namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _create(self) -> bool:
        now = _micro_now()
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self._name, namespace=self._namespace),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=self._duration,
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self._api.create_namespaced_lease(self._namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # another replica created it first
                return False
            raise
        self._holder = self.identity
        return True

    def _take(self, lease: client.V1Lease) -> bool:
        spec = lease.spec
        now = _micro_now()
        if spec.holder_identity != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = self._duration
        spec.renew_time = now
        try:
            self._api.replace_namespaced_lease(self._name, self._namespace, lease)
        except ApiException as exc:
            if exc.status == 409:  # someone wrote it since we read it
                return False
            raise
        self._holder = self.identity
        return True

    def _observe(self, lease: client.V1Lease) -> None:
        spec = lease.spec
        record = (spec.holder_identity, _stamp(spec.renew_time))
        if record != self._observed:
            self._observed = record
            self._observed_at = self._clock()
        self._holder = spec.holder_identity or None

    def _expired(self, spec: client.V1LeaseSpec) -> bool:
        duration = spec.lease_duration_seconds or self._duration
        return self._clock() >= self._observed_at + duration


def _micro_now() -> datetime:
    return datetime.now(UTC)


def _stamp(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value
