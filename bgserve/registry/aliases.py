"""Deployment aliases (``<deployment>-live``/``-previous``) on a release's three parts.

These helpers call MLflow directly and leave its errors untranslated; callers wrap
them in :func:`bgserve.registry.errors.translate_errors`.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from bgserve.registry.lookup import prompt_alias, require_prompt

__all__ = [
    "PARTS",
    "Part",
    "ReleaseParts",
    "alias_version",
    "delete_alias",
    "move_deployment_aliases",
    "release_part",
    "set_alias",
]

Part = Literal["model", "prompt", "bundle"]
PARTS: tuple[Part, ...] = ("model", "prompt", "bundle")


class ReleaseParts(Protocol):
    """Anything naming a release's three registry parts at fixed versions."""

    @property
    def model_name(self) -> str: ...
    @property
    def model_version(self) -> int: ...
    @property
    def prompt_name(self) -> str: ...
    @property
    def prompt_version(self) -> int: ...
    @property
    def bundle_name(self) -> str: ...
    @property
    def bundle_version(self) -> int: ...


def release_part(release: ReleaseParts, part: Part) -> tuple[str, int]:
    """The name and version of ``release``'s ``part``."""
    if part == "model":
        return release.model_name, release.model_version
    if part == "prompt":
        return release.prompt_name, release.prompt_version
    return release.bundle_name, release.bundle_version


def alias_version(client: Any, part: Part, name: str, alias: str) -> int | None:
    """The version that ``alias`` of model or prompt ``name`` points at, or None if unset."""
    if part == "prompt":
        require_prompt(client, name)
        return prompt_alias(client, name, alias)
    version = client.get_registered_model(name).aliases.get(alias)
    return None if version is None else int(version)


def set_alias(client: Any, part: Part, name: str, version: int, alias: str) -> None:
    """Point ``alias`` of model or prompt ``name`` at ``version``."""
    if part == "prompt":
        client.set_prompt_alias(name, alias, version)
    else:
        client.set_registered_model_alias(name, alias, str(version))


def delete_alias(client: Any, part: Part, name: str, alias: str) -> None:
    """Remove ``alias`` from model or prompt ``name``."""
    if part == "prompt":
        client.delete_prompt_alias(name, alias)
    else:
        client.delete_registered_model_alias(name, alias)


def move_deployment_aliases(
    client: Any, deployment: str, live: ReleaseParts, previous: ReleaseParts | None
) -> None:
    """Point ``<deployment>-live`` at ``live``'s parts and ``<deployment>-previous`` at
    ``previous``'s (or remove it). See
    :meth:`bgserve.registry.mlflow_registry.MlflowRegistry.move_aliases`.
    """
    live_alias, previous_alias = f"{deployment}-live", f"{deployment}-previous"
    for part in PARTS:
        set_alias(client, part, *release_part(live, part), live_alias)
    for part in PARTS:
        live_name, _ = release_part(live, part)
        if previous is None:
            delete_alias(client, part, live_name, previous_alias)
            continue
        previous_name, previous_version = release_part(previous, part)
        set_alias(client, part, previous_name, previous_version, previous_alias)
        if previous_name != live_name:
            delete_alias(client, part, previous_name, live_alias)
            delete_alias(client, part, live_name, previous_alias)
