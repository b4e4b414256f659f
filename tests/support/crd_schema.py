"""Strict validation of objects against the official CRDs (test helper, not package code).

The CRDs live outside the repository: ``tools/crds.py`` fetches them into a cache, or
``$BGSERVE_CRD_DIR`` points at a copy; either way each file is checked by SHA-256.
Beyond the CRD's OpenAPI schema (checked with jsonschema), this rejects what the
API server would silently prune or what jsonschema ignores: unknown fields, duplicate
keys of ``x-kubernetes-list-type`` map/set lists, int32/int64 overflow, and
metadata that is not a valid name or label set. CEL rules
(``x-kubernetes-validations``) are not evaluated.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.support.missing import missing
from tools import crds

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
# Kinds whose names must be DNS-1123 labels (the rest may be subdomains).
LABEL_NAMED_KINDS = {"InferenceService"}


@functools.cache
def crd_dir() -> Path | None:
    """The verified CRD directory (``$BGSERVE_CRD_DIR``, else the ``tools/crds.py`` cache), or
    None if it is missing or a file does not match its pinned SHA-256."""
    return None if crd_problems() else crds.crd_dir()


@functools.cache
def crd_problems() -> tuple[str, ...]:
    """What is wrong with the CRD directory; empty when every pinned file is there and good."""
    return tuple(crds.problems(crds.crd_dir()))


def require_crd_dir() -> Path:
    """The CRD directory; fails the test under CI=true if missing or wrong, else skips it."""
    path = crd_dir()
    if path is None:
        wrong = crd_problems()
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        missing(
            f"official CRDs not usable: {wrong[0]}{more}; run `python3 tools/crds.py` to fetch "
            "them, or set BGSERVE_CRD_DIR to a directory holding them"
        )
    return path


@dataclass(frozen=True)
class Crd:
    """One CustomResourceDefinition: its API coordinates and per-version schemas."""

    group: str
    kind: str
    plural: str
    namespaced: bool
    schemas: Mapping[str, Mapping[str, Any]]
    status_subresource: Mapping[str, bool]

    def validate(self, obj: Mapping[str, Any]) -> list[str]:
        """Every problem with ``obj``; empty when the API server would accept it unchanged."""
        api_version = obj.get("apiVersion", "")
        group, _, version = api_version.rpartition("/")
        if group != self.group or version not in self.schemas:
            return [f"apiVersion {api_version!r} is not served by the {self.kind} CRD"]
        if obj.get("kind") != self.kind:
            return [f"kind {obj.get('kind')!r} is not {self.kind}"]
        schema = self.schemas[version]
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        errors = [f"{_path(e.absolute_path)}: {e.message}" for e in _validator(schema, body)]
        errors += list(_strict(schema, body, ""))
        errors += _metadata_errors(self.kind, obj.get("metadata"))
        return errors


def _validator(schema: Mapping[str, Any], body: Mapping[str, Any]) -> Iterator[Any]:
    yield from jsonschema.Draft4Validator(schema).iter_errors(body)


def _path(parts: Any) -> str:
    return "." + ".".join(str(p) for p in parts)


def _strict(schema: Mapping[str, Any], value: Any, where: str) -> Iterator[str]:
    """What jsonschema lets through: unknown fields, list-key duplicates, int ranges."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        yield from _strict_object(schema, value, where)
    elif isinstance(value, list):
        yield from _list_duplicates(schema, value, where)
        for i, item in enumerate(value):
            yield from _strict(schema.get("items", {}), item, f"{where}[{i}]")
    elif isinstance(value, int) and not isinstance(value, bool):
        low, high = INT_RANGES.get(schema.get("format", ""), (None, None))
        if low is not None and high is not None and not low <= value <= high:
            yield f"{where}: {value} is out of {schema['format']} range"


def _strict_object(
    schema: Mapping[str, Any], value: Mapping[str, Any], where: str
) -> Iterator[str]:
    props = schema.get("properties")
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        if props is not None and key in props:
            yield from _strict(props[key], item, f"{where}.{key}")
        elif isinstance(extra, dict):
            yield from _strict(extra, item, f"{where}.{key}")
        elif not (extra is True or schema.get("x-kubernetes-embedded-resource")):
            yield f"{where}.{key}: unknown field (the API server would prune it)"


def _list_duplicates(schema: Mapping[str, Any], value: list[Any], where: str) -> Iterator[str]:
    kind = schema.get("x-kubernetes-list-type")
    if kind == "set":
        seen = [repr(v) for v in value]
        if len(set(seen)) != len(seen):
            yield f"{where}: duplicate items in a set list"
    elif kind == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        tuples = [tuple(repr(item.get(k)) for k in keys) for item in value]
        if len(set(tuples)) != len(tuples):
            yield f"{where}: duplicate keys {keys} in a map list"


def structural_errors(schema: Mapping[str, Any], where: str = "") -> list[str]:
    """What makes a kube-apiserver refuse the CRD with 422: an array without an ``items``
    schema (``items: {}``) or a node without a ``type`` (where neither
    ``x-kubernetes-int-or-string`` nor ``x-kubernetes-preserve-unknown-fields`` stands
    in for it). Nodes under ``anyOf``/``allOf``/``oneOf``/``not`` are value checks, not
    structure, and need no type."""
    errors: list[str] = []
    if not (
        schema.get("type")
        or schema.get("x-kubernetes-int-or-string")
        or schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        errors.append(f"{where or '.'}.type: Required value: must not be empty")
    if schema.get("type") == "array":
        items = schema.get("items")
        if not isinstance(items, Mapping) or not items:
            errors.append(f"{where}.items: Required value: must not be empty for array items")
        else:
            errors += structural_errors(items, f"{where}[]")
    for key, child in (schema.get("properties") or {}).items():
        errors += structural_errors(child, f"{where}.{key}")
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        errors += structural_errors(extra, f"{where}.*")
    return errors


def _metadata_errors(kind: str, metadata: Any) -> list[str]:
    if not isinstance(metadata, dict):
        return ["metadata: missing"]
    name = metadata.get("name", "")
    pattern, limit = (DNS1123_LABEL, 63) if kind in LABEL_NAMED_KINDS else (DNS1123_SUBDOMAIN, 253)
    errors = []
    if not (0 < len(name) <= limit and pattern.match(name)):
        errors.append(f"metadata.name {name!r} is not a valid {kind} name")
    for key, value in (metadata.get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            errors.append(f"metadata.labels.{key}: invalid label value {value!r}")
        if len(key.rpartition("/")[2]) > 63:
            errors.append(f"metadata.labels.{key}: label key too long")
    for key, value in (metadata.get("annotations") or {}).items():
        if not isinstance(value, str):
            errors.append(f"metadata.annotations.{key}: not a string")
    return errors


def _load(path: Path) -> Crd:
    with path.open("rb") as handle:
        doc = yaml.load(handle, Loader=yaml.CSafeLoader)
    spec = doc["spec"]
    versions = [v for v in spec["versions"] if v.get("served", True)]
    return Crd(
        group=spec["group"],
        kind=spec["names"]["kind"],
        plural=spec["names"]["plural"],
        namespaced=spec.get("scope") == "Namespaced",
        schemas={v["name"]: v["schema"]["openAPIV3Schema"] for v in versions},
        status_subresource={v["name"]: "status" in (v.get("subresources") or {}) for v in versions},
    )


@functools.cache
def load_crds(root: Path) -> dict[str, Crd]:
    """Every CRD under ``root``, by ``<plural>.<group>``; parsed once per process."""
    crds: dict[str, Crd] = {}
    for path in sorted(root.rglob("*.yaml")):
        with path.open("rb") as handle:
            head = handle.read(4096).decode("utf-8", "replace")
        if "kind: CustomResourceDefinition" not in head:
            continue
        crd = _load(path)
        crds[f"{crd.plural}.{crd.group}"] = crd
    return crds


def crd_for(crds: Mapping[str, Crd], obj: Mapping[str, Any]) -> Crd:
    """The CRD that serves ``obj``'s apiVersion and kind."""
    group = obj.get("apiVersion", "").rpartition("/")[0]
    for crd in crds.values():
        if crd.group == group and crd.kind == obj.get("kind"):
            return crd
    raise LookupError(f"no CRD for {obj.get('apiVersion')} {obj.get('kind')}")


def validate_object(crds: Mapping[str, Crd], obj: Mapping[str, Any]) -> list[str]:
    """Problems of ``obj`` against its CRD (see :meth:`Crd.validate`)."""
    return crd_for(crds, obj).validate(obj)
