"""Releases and the URIs that name their parts. Pure: no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bgserve.errors import InvalidInput

# Anchored with \Z, not $: $ also matches before a final newline, and callers may use .match.
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_REF_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}"
_URI = re.compile(
    rf"(?P<scheme>models|prompts):/(?P<name>{_REF_NAME})"
    rf"(?:/(?P<version>[1-9][0-9]{{0,9}})|@(?P<alias>[A-Za-z0-9_-]{{1,255}}))"
)

Kind = Literal["models", "prompts"]


def validate_name(value: str, field: str = "name", max_length: int = 63) -> str:
    """Check a deployment or release name is a DNS-1123 label; return it unchanged.

    Raises:
        InvalidInput: naming ``field`` and the rule it breaks.
    """
    if not value or len(value) > max_length or not DNS1123_LABEL.fullmatch(value):
        raise InvalidInput(
            f"{field} {value!r} is not a DNS-1123 label: use at most {max_length} lowercase "
            "letters, digits and '-', starting and ending with a letter or digit",
            field=field,
        )
    return value


@dataclass(frozen=True)
class RegistryRef:
    """A parsed ``models:/`` or ``prompts:/`` URI: a fixed version or an alias, not both."""

    kind: Kind
    name: str
    version: int | None = None
    alias: str | None = None

    @property
    def uri(self) -> str:
        suffix = f"/{self.version}" if self.version is not None else f"@{self.alias}"
        return f"{self.kind}:/{self.name}{suffix}"

    def pinned(self, version: int) -> RegistryRef:
        """The same name at a fixed version."""
        return RegistryRef(self.kind, self.name, version=version)


def parse_uri(uri: str, kind: Kind, field: str) -> RegistryRef:
    """Parse ``models:/name/3``, ``models:/name@alias`` (or the ``prompts:/`` forms).

    Raises:
        InvalidInput: naming ``field``, with the accepted forms.
    """
    match = _URI.fullmatch(uri or "")
    if not match or match["scheme"] != kind:
        raise InvalidInput(
            f"{field} {uri!r} is not a valid {kind} URI: use {kind}:/<name>/<version> "
            f"or {kind}:/<name>@<alias>",
            field=field,
        )
    version = int(match["version"]) if match["version"] else None
    return RegistryRef(kind, match["name"], version=version, alias=match["alias"])


@dataclass(frozen=True)
class Release:
    """One model version packaged with one prompt version, as one servable bundle.

    Every version is fixed at registration: a release never changes afterwards.
    """

    id: int
    name: str
    model_name: str
    model_version: int
    prompt_name: str
    prompt_version: int
    bundle_name: str
    bundle_version: int
    created_at: datetime
    model_ref: str = ""
    prompt_ref: str = ""

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.model_version}"

    @property
    def prompt_uri(self) -> str:
        return f"prompts:/{self.prompt_name}/{self.prompt_version}"

    @property
    def bundle_uri(self) -> str:
        return f"models:/{self.bundle_name}/{self.bundle_version}"


@dataclass(frozen=True)
class ResolvedRelease:
    """What the registry hands back when it registers a release (no id yet)."""

    model_name: str
    model_version: int
    prompt_name: str
    prompt_version: int
    bundle_name: str
    bundle_version: int
