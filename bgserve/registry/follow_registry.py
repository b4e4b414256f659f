"""What a follow rule reads and writes in MLflow: where an alias points now, and the
verdict tags on prompt versions, model versions and comparison runs.

Every MLflow failure is translated (:func:`bgserve.registry.errors.translate_errors`).
"""

from __future__ import annotations

from collections.abc import Mapping

from bgserve.domain.follow_rule import Part
from bgserve.registry.aliases import alias_version
from bgserve.registry.errors import translate_errors
from bgserve.registry.lookup import require_model, require_prompt
from bgserve.registry.mlflow_registry import MlflowRegistry

MAX_TAG_VALUE = 5000
"""MLflow's limit on a model version tag's value."""


class FollowRegistry:
    """Alias lookups and verdict tags on one MLflow registry."""

    def __init__(self, registry: MlflowRegistry) -> None:
        self.registry = registry

    def require(self, part: Part, name: str) -> None:
        """Raise NotFound unless ``name`` is a model (``part`` model) or a prompt
        (``part`` prompt); RegistryUnavailable when MLflow cannot be reached."""
        with translate_errors(f"looking up {part} {name!r}"):
            if part == "prompt":
                require_prompt(self.registry.client, name)
            else:
                require_model(self.registry.client, name)

    def alias_target(self, part: Part, name: str, alias: str) -> int | None:
        """The version ``alias`` of model or prompt ``name`` points at now, None when the
        alias is unset. Raises NotFound (no such model or prompt), RegistryUnavailable."""
        with translate_errors(f"reading alias {alias!r} of {part} {name!r}"):
            return alias_version(self.registry.client, part, name, alias)

    def tag_version(self, part: Part, name: str, version: int, tags: Mapping[str, str]) -> None:
        """Set ``tags`` on version ``version`` of model or prompt ``name`` (MLflow's UI shows
        them on the version's page). Idempotent. Raises NotFound, RegistryUnavailable."""
        client = self.registry.client
        with translate_errors(f"tagging version {version} of {part} {name!r}"):
            for key, value in tags.items():
                shown = value[:MAX_TAG_VALUE]
                if part == "prompt":
                    client.set_prompt_version_tag(name, str(version), key, shown)
                else:
                    client.set_model_version_tag(name, str(version), key, shown)

    def tag_run(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set ``tags`` on MLflow run ``run_id``. Idempotent. Raises NotFound,
        RegistryUnavailable."""
        from mlflow.entities import RunTag

        with translate_errors(f"tagging run {run_id}"):
            self.registry.client.log_batch(
                run_id, tags=[RunTag(k, v[:MAX_TAG_VALUE]) for k, v in tags.items()]
            )
