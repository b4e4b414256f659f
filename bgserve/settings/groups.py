"""Setting groups read from flat environment variables.

Settings are grouped by topic (``settings.kube.namespace``), while the environment keeps
its flat names (``BGSERVE_KUBE_NAMESPACE``): those names are the public contract. A
:class:`Group` says how its fields are spelt flat (:func:`spelt_flat`: a prefix before the
field name, plus older spellings); :func:`nest` moves flat keys into their groups before
validation, and :class:`FlatEnvSource` reads the flat variables from the environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, Self

from pydantic import AliasChoices, AliasGenerator, BaseModel, ConfigDict, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

ENV_PREFIX = "BGSERVE_"


def spelt_flat(prefix: str) -> ConfigDict:
    """The config of a group whose field ``f`` is also spelt ``<prefix>f`` (its flat name,
    which validation errors then show)."""
    return ConfigDict(
        extra="forbid",
        populate_by_name=True,
        alias_generator=AliasGenerator(
            validation_alias=lambda name: AliasChoices(prefix + name, name)
        ),
    )


class Group(BaseModel):
    """Settings on one topic, read from flat names (see :func:`spelt_flat`; a field may add
    older spellings as further ``validation_alias`` choices)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _group_type(field: FieldInfo) -> type[Group] | None:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, Group):
        return annotation
    return None


def _flat_names(name: str, field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [c for c in alias.choices if isinstance(c, str) and c != name]
    return [alias] if isinstance(alias, str) and alias != name else []


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
        for flat in _flat_names(name, field):
            yield flat, (*path, name), field


def nest(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with flat keys moved into their groups (``kube_namespace`` ->
    ``kube: {kube_namespace: ...}``, which the group reads as ``namespace``). A value given
    nested wins over the same value given flat; a group given as a model is taken whole."""
    out = dict(data)
    found: dict[tuple[str, ...], tuple[str, Any]] = {}
    for flat, path, _ in flat_fields(model):
        if flat in out:
            value = out.pop(flat)
            found.setdefault(path, (flat, value))  # the first spelling wins
    for path, (flat, value) in found.items():
        node: Any = out
        for key in path[:-1]:
            child = node.get(key)
            if isinstance(child, BaseModel):
                break
            node[key] = child = dict(child) if isinstance(child, Mapping) else {}
            node = child
        else:
            if path[-1] not in node and flat not in node:
                node[flat] = value
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


def set_path(model: BaseModel, path: tuple[str, ...], value: Any) -> None:
    """Set the field at ``path`` (group names, then the field) of ``model``."""
    # Groups are copied on the way down, so the original settings never change.
    head, *rest = path
    if not rest:
        setattr(model, head, value)
        return
    group = getattr(model, head).model_copy()
    set_path(group, tuple(rest), value)
    setattr(model, head, group)


def is_group(annotation: Any) -> bool:
    """Whether a field's annotation is a settings group."""
    return isinstance(annotation, type) and issubclass(annotation, Group)


class FlatSettings(BaseSettings):
    """Settings made of plain fields and :class:`Group` fields, every one of them also
    spelt flat: read from the environment's flat variables, taken flat by the constructor
    and by :meth:`model_copy`, and listed flat by :meth:`env_names`."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment's flat group variables are read after the plain ones."""
        flat = FlatEnvSource(settings_cls)
        return init_settings, env_settings, flat, dotenv_settings, file_secret_settings

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_names(cls, data: Any) -> Any:
        return nest(cls, data) if isinstance(data, dict) else data

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied (not validated, as pydantic's); flat names
        (``kube_namespace``) reach their groups."""
        if not update:
            return super().model_copy(deep=deep)
        plain = dict(update)
        copy = super().model_copy(deep=deep)
        for flat, path, _ in flat_fields(type(self)):
            if flat in plain:
                set_path(copy, path, plain.pop(flat))
        return super(FlatSettings, copy).model_copy(update=plain)

    @classmethod
    def env_names(cls) -> set[str]:
        """Every ``BGSERVE_`` variable bgserve reads (older spellings included)."""
        plain = {name for name, f in cls.model_fields.items() if not is_group(f.annotation)}
        flat = {name for name, _, _ in flat_fields(cls)}
        return {f"{ENV_PREFIX}{name.upper()}" for name in plain | flat}

    def flat(self, name: str) -> Any:
        """The value of the setting spelt ``name`` flat (``kube_namespace``).
        Raises KeyError for a name bgserve does not know."""
        if name in type(self).model_fields and not is_group(
            type(self).model_fields[name].annotation
        ):
            return getattr(self, name)
        for flat, path, _ in flat_fields(type(self)):
            if flat == name:
                value: Any = self
                for key in path:
                    value = getattr(value, key)
                return value
        raise KeyError(name)
