"""Kubernetes helpers shared by the KServe and Seldon backends.

Client construction from settings, the labels that mark what bgserve owns, a
conflict-safe server-side apply, and the one place where ``ApiException`` becomes a
bgserve error. Readiness is followed in :mod:`bgserve.kube.readiness`.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from bgserve.errors import BackendError
from bgserve.settings import KubeGroup

Obj = dict[str, Any]
APPLY_PATCH = "application/apply-patch+yaml"

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "bgserve"
DEPLOYMENT_LABEL = "bgserve.io/deployment"
RELEASE_LABEL = "bgserve.io/release"

# Errors that mean "the API server could not be reached or answered badly".
_TRANSPORT_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)


@dataclass(frozen=True)
class Resource:
    """A custom resource type: where its objects live in the API."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


def managed_labels(deployment: str, release_id: int | None = None) -> dict[str, str]:
    """The labels bgserve puts on every object it owns (and selects them by)."""
    labels = {MANAGED_BY: MANAGER, DEPLOYMENT_LABEL: deployment}
    if release_id is not None:
        labels[RELEASE_LABEL] = str(release_id)
    return labels


def is_managed(obj: Mapping[str, Any]) -> bool:
    """Whether ``obj`` carries bgserve's managed-by label."""
    labels = obj.get("metadata", {}).get("labels") or {}
    return bool(labels.get(MANAGED_BY) == MANAGER)


def label_selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def dns_label(base: str, suffix: str, max_length: int) -> str:
    """``base + suffix`` as a DNS-1123 label starting with a letter, within ``max_length``.

    A base that does not fit is cut and given a short hash of itself, so two long
    names that share a prefix still map to different labels.
    """
    if not base[:1].isalpha():
        base = f"bg-{base}"
    if len(base) + len(suffix) <= max_length:
        return base + suffix
    digest = hashlib.sha256(base.encode()).hexdigest()[:6]
    keep = max_length - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-')}-{digest}{suffix}"


def api_client(kube: KubeGroup) -> client.ApiClient:
    """An API client from settings: explicit URL, else in-cluster, else kubeconfig.

    Raises:
        BackendError: no usable configuration was found.
    """
    configuration = client.Configuration()
    if kube.api_url:
        configuration.host = kube.api_url
        return client.ApiClient(configuration)
    try:
        if kube.config is None:
            try:
                config.load_incluster_config(client_configuration=configuration)
                return client.ApiClient(configuration)
            except config.ConfigException:
                pass
        config.load_kube_config(
            config_file=str(kube.config) if kube.config else None,
            context=kube.context or None,
            client_configuration=configuration,
            persist_config=False,
        )
    except (config.ConfigException, OSError) as exc:
        raise BackendError(
            "no Kubernetes configuration found: run bgserve in a cluster, or set "
            "BGSERVE_KUBE_CONFIG or BGSERVE_KUBE_API_URL",
            details={"cause": str(exc)},
        ) from exc
    return client.ApiClient(configuration)


def backend_error(exc: BaseException, doing: str) -> BackendError:
    """Translate a Kubernetes client failure into a BackendError naming what failed."""
    if isinstance(exc, ApiException):
        hint = {
            401: "bgserve's credentials were refused",
            403: "bgserve's service account lacks a permission (see manifests/base/role.yaml)",
            404: "the resource type or namespace does not exist (is the CRD installed?)",
            409: "the object kept changing under bgserve",
            422: "the API server rejected the object",
        }.get(exc.status or 0, "the API server refused the request")
        return BackendError(
            f"{doing} failed: {hint} (HTTP {exc.status} {exc.reason})",
            details={"status": exc.status, "body": str(exc.body or "")[:2000]},
        )
    return BackendError(f"{doing} failed: the Kubernetes API is unreachable ({exc})")


def _subset(want: Any, have: Any) -> bool:
    """Whether ``have`` holds everything in ``want`` (server-side defaults may add more)."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(
            k in have and _subset(v, have[k]) for k, v in want.items()
        )
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(_subset(w, h) for w, h in zip(want, have, strict=True))
        )
    return bool(want == have)


def up_to_date(
    current: Mapping[str, Any], desired: Mapping[str, Any], manager: str = MANAGER
) -> bool:
    """Whether applying ``desired`` over ``current`` as ``manager`` would change nothing:
    ``current`` holds all of it, and ``manager`` owns no field it leaves out (an apply
    removes those)."""
    meta_want = {k: desired["metadata"].get(k) or {} for k in ("labels", "annotations")}
    held = _subset(desired.get("spec", {}), current.get("spec")) and _subset(
        meta_want, {k: current["metadata"].get(k) or {} for k in meta_want}
    )
    if not held:
        return False
    owned = _applied_fields(current, manager)
    owned_meta = owned.get("f:metadata") or {}
    return not (
        _leaves_out(owned.get("f:spec") or {}, desired.get("spec", {}))
        or any(_leaves_out(owned_meta.get(f"f:{k}") or {}, meta_want[k]) for k in meta_want)
    )


def _applied_fields(obj: Mapping[str, Any], manager: str) -> Mapping[str, Any]:
    """The fields (``fieldsV1``) ``manager`` set by server-side apply; empty if none."""
    for entry in obj.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            return dict(entry.get("fieldsV1") or {})
    return {}


def _leaves_out(owned: Mapping[str, Any], desired: Any) -> bool:
    """Whether ``desired`` lacks a field of the owned set ``owned`` (fieldsV1: ``f:name``
    keys for fields; the items of a list are compared whole by :func:`_subset`)."""
    for key, below in owned.items():
        if not key.startswith("f:"):
            continue
        name = key[2:]
        if not isinstance(desired, Mapping) or name not in desired:
            return True
        if isinstance(below, Mapping) and _leaves_out(below, desired[name]):
            return True
    return False


class KubeObjects:
    """Namespaced objects of one custom resource type, written conflict-safely.

    Every method translates client failures into :class:`BackendError`.
    """

    def __init__(
        self, api: client.CustomObjectsApi, resource: Resource, namespace: str, retries: int
    ) -> None:
        self.api = api
        self.resource = resource
        self.namespace = namespace
        self.retries = retries

    def _args(self) -> tuple[str, str, str, str]:
        r = self.resource
        return r.group, r.version, self.namespace, r.plural

    def get(self, name: str) -> Obj | None:
        """The object, or None if it does not exist. No side effects."""
        try:
            obj: Obj = self.api.get_namespaced_custom_object(*self._args(), name)
            return obj
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise backend_error(exc, f"reading {self.resource.kind} {name}") from exc
        except _TRANSPORT_ERRORS as exc:
            raise backend_error(exc, f"reading {self.resource.kind} {name}") from exc

    def select(self, labels: Mapping[str, str]) -> list[Obj]:
        """Objects carrying all of ``labels``. No side effects."""
        try:
            found = self.api.list_namespaced_custom_object(
                *self._args(), label_selector=label_selector(labels)
            )
        except _TRANSPORT_ERRORS as exc:
            raise backend_error(exc, f"listing {self.resource.plural}") from exc
        return list(found.get("items", []))

    def apply(self, desired: Obj) -> Obj:
        """Create ``desired`` or bring the existing object in line with it. Idempotent.

        Writes carry the resourceVersion just read; a 409 is answered by reading
        again, never by overwriting. Refuses to touch an object bgserve does not manage.

        Raises:
            BackendError: unmanaged object in the way, conflicts beyond the retry
                budget, or any refusal of the API server.
        """
        return self.apply_with(desired["metadata"]["name"], lambda _current: desired)

    def ensure(self, desired: Obj) -> tuple[Obj, bool]:
        """As :meth:`apply`; also says whether this call created the object."""
        return self._apply(desired["metadata"]["name"], lambda _current: desired)

    def ensure_with(self, name: str, build: Callable[[Obj | None], Obj]) -> tuple[Obj, bool]:
        """As :meth:`apply_with`; also says whether this call created the object."""
        return self._apply(name, build)

    def apply_with(
        self, name: str, build: Callable[[Obj | None], Obj], *, manager: str = MANAGER
    ) -> Obj:
        """As :meth:`apply`, with the desired object built from the one just read.

        ``build(current)`` runs again after every conflict, so a change computed from
        the object (one predictor of several, say) never overwrites someone else's.
        ``manager`` is the field manager of the apply: another one than ``bgserve``
        owns only the fields its object holds (a weight, say), and leaves bgserve's own
        fields as they are.
        """
        return self._apply(name, build, manager)[0]

    def _apply(
        self, name: str, build: Callable[[Obj | None], Obj], manager: str = MANAGER
    ) -> tuple[Obj, bool]:
        for _ in range(self.retries):
            current = self.get(name)
            if current is not None and not is_managed(current):
                raise BackendError(
                    f"{self.resource.kind} {self.namespace}/{name} exists but is not managed "
                    f"by bgserve (no {MANAGED_BY}={MANAGER} label): rename or remove it"
                )
            desired = build(current)
            if current is not None and up_to_date(current, desired, manager):
                return current, False
            try:
                return self._write(current, desired, manager), current is None
            except ApiException as exc:
                if exc.status != 409:
                    raise backend_error(exc, f"writing {self.resource.kind} {name}") from exc
            except _TRANSPORT_ERRORS as exc:
                raise backend_error(exc, f"writing {self.resource.kind} {name}") from exc
        raise BackendError(
            f"writing {self.resource.kind} {name} lost {self.retries} conflicts in a row: "
            "something else keeps changing it"
        )

    def _write(self, current: Obj | None, desired: Obj, manager: str = MANAGER) -> Obj:
        """Server-side apply as field manager ``manager`` (``bgserve`` by default).

        ``desired`` holds exactly the fields bgserve owns, so a user's own labels and
        annotations and fields set by other managers are left alone. Only an object
        bgserve already manages is applied with ``force`` (it takes back its own fields
        from someone who changed them); the resourceVersion just read makes a change
        since that read a 409, answered by reading again.
        """
        body = copy.deepcopy(desired)
        if current is not None:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        obj: Obj = self.api.patch_namespaced_custom_object(
            *self._args(),
            desired["metadata"]["name"],
            body,
            field_manager=manager,
            force=current is not None,
            field_validation="Strict",
            _content_type=APPLY_PATCH,
        )
        return obj

    def delete(self, name: str) -> bool:
        """Delete the object; False if it was already gone. Idempotent.

        Raises:
            BackendError: the API server refused.
        """
        try:
            self.api.delete_namespaced_custom_object(*self._args(), name)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise backend_error(exc, f"deleting {self.resource.kind} {name}") from exc
        except _TRANSPORT_ERRORS as exc:
            raise backend_error(exc, f"deleting {self.resource.kind} {name}") from exc


def condition(obj: Mapping[str, Any], kind: str = "Ready") -> Mapping[str, Any] | None:
    """The status condition of type ``kind``, if the controller has set one."""
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def observed_current(obj: Mapping[str, Any]) -> bool:
    """Whether the controller's status describes the object's latest spec."""
    generation = obj.get("metadata", {}).get("generation")
    observed = obj.get("status", {}).get("observedGeneration")
    return generation is not None and observed == generation


def is_ready(obj: Mapping[str, Any]) -> bool:
    """Ready condition True, for the current generation."""
    cond = condition(obj)
    return observed_current(obj) and cond is not None and cond.get("status") == "True"
