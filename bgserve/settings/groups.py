"""Setting groups read from flat environment variables.

Settings are grouped by topic (``settings.kube.namespace``), while the environment keeps
its flat names (``BGSERVE_KUBE_NAMESPACE``): those names are the public contract. A
:class:`Group` says how its fields are spelt flat (its ``prefix`` before the field name,
plus older spellings in ``legacy``); :func:`nest` moves flat keys into their groups before
validation, and :class:`FlatEnvSource` reads the flat variables from the environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

ENV_PREFIX = "BGSERVE_"


class Group(BaseModel):
    """Settings on one topic; field ``f`` is spelt ``<prefix>f`` flat."""

    model_config = ConfigDict(extra="forbid")

    prefix: ClassVar[str] = ""
    legacy: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    """Older flat spellings of a field, still read (e.g. ``steps``: ``promote_steps``)."""


def _group_type(field: FieldInfo) -> type[Group] | None:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, Group):
        return annotation
    return None


def flat_fields(model: type[BaseModel]) -> Iterator[tuple[str, tuple[str, ...], FieldInfo]]:
    """Every flat name in ``model``'s groups: (flat name, path in the groups, field).

    Fields of ``model`` itself that are not groups are left out (they are flat already).
    """
    for name, field in model.model_fields.items():
        group = _group_type(field)
        if group is not None:
            yield from _group_fields(group, (name,))


def _group_fields(
    group: type[Group], path: tuple[str, ...]
) -> Iterator[tuple[str, tuple[str, ...], FieldInfo]]:
    for name, field in group.model_fields.items():
        inner = _group_type(field)
        if inner is not None:
            yield from _group_fields(inner, (*path, name))
            continue
        for flat in (group.prefix + name, *group.legacy.get(name, ())):
            yield flat, (*path, name), field


def nest(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with flat keys moved into their groups (``kube_namespace`` ->
    ``kube.namespace``). A value given nested wins over the same value given flat; a group
    given as a model is taken whole."""
    out = dict(data)
    nested: dict[str, Any] = {}
    for flat, path, _ in flat_fields(model):
        if flat not in out:
            continue
        value = out.pop(flat)
        if isinstance(data.get(path[0]), BaseModel):
            continue
        node = nested
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node.setdefault(path[-1], value)
    for key, values in nested.items():
        given = out.get(key)
        if isinstance(given, BaseModel):
            continue
        out[key] = _merged(values, given if isinstance(given, Mapping) else {})
    return out


def _merged(flat: dict[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(flat)
    for key, value in given.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


class FlatEnvSource(PydanticBaseSettingsSource):
    """Reads the groups' flat variables (``BGSERVE_KUBE_NAMESPACE``) from the environment,
    case-insensitively, decoding JSON for list and dict fields as pydantic-settings does."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._environ = {k.lower(): v for k, v in os.environ.items()}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: :meth:`__call__` reads the flat names itself."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for flat, _, field in flat_fields(self.settings_cls):
            raw = self._environ.get((ENV_PREFIX + flat).lower())
            if raw is None or flat in values:
                continue
            values[flat] = (
                self.decode_complex_value(flat, field, raw) if self.field_is_complex(field) else raw
            )
        return values
