"""Look models and prompts up by name, never letting one pass for the other.

These helpers call MLflow directly; errors other than the :class:`NotFound` they raise
are not translated here (callers wrap them in
:func:`bgserve.registry.errors.translate_errors`).
"""

from __future__ import annotations

from typing import Any

from mlflow.entities.model_registry import PromptVersion
from mlflow.exceptions import MlflowException

from bgserve.errors import NotFound
from bgserve.registry.errors import is_absent

__all__ = [
    "is_model",
    "is_prompt",
    "model_alias",
    "prompt_alias",
    "prompt_version",
    "require_model",
    "require_prompt",
]


def require_model(client: Any, name: str) -> None:
    """Raise :class:`NotFound` unless ``name`` is a registered model (hinting at a prompt)."""
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if not is_absent(exc):
            raise
        hint = f": {name!r} is a prompt, use prompts:/{name}" if is_prompt(client, name) else ""
        raise NotFound(f"model {name!r} does not exist{hint}") from exc


def require_prompt(client: Any, name: str) -> None:
    """Raise :class:`NotFound` unless ``name`` is a prompt (hinting at a model)."""
    if client.get_prompt(name) is None:
        hint = f": {name!r} is a model, use models:/{name}" if is_model(client, name) else ""
        raise NotFound(f"prompt {name!r} does not exist{hint}")


def is_prompt(client: Any, name: str) -> bool:
    """Whether ``name`` is a prompt."""
    return client.get_prompt(name) is not None


def is_model(client: Any, name: str) -> bool:
    """Whether ``name`` is a registered model."""
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if is_absent(exc):
            return False
        raise
    return True


def model_alias(client: Any, name: str, alias: str) -> int:
    """The version that model ``name``'s ``alias`` points at; :class:`NotFound` if unset."""
    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if not is_absent(exc) and exc.error_code != "INVALID_PARAMETER_VALUE":
            raise
        raise NotFound(f"model {name!r} has no alias {alias!r}") from exc


def prompt_alias(client: Any, name: str, alias: str) -> int | None:
    """The version that prompt ``name``'s ``alias`` points at, or None if unset."""
    try:
        return int(client.get_prompt_version_by_alias(name, alias).version)
    except MlflowException as exc:
        # A missing prompt alias is INVALID_PARAMETER_VALUE in the SQL and file stores.
        if not is_absent(exc) and exc.error_code != "INVALID_PARAMETER_VALUE":
            raise
        return None


def prompt_version(client: Any, name: str, version: int) -> PromptVersion:
    """Prompt ``name`` at ``version``; :class:`NotFound` if there is no such version."""
    prompt: PromptVersion | None
    try:
        prompt = client.get_prompt_version(name, str(version))
    except MlflowException as exc:
        if not is_absent(exc):
            raise
        prompt = None
    if prompt is None:
        raise NotFound(f"prompt {name!r} has no version {version}")
    return prompt
