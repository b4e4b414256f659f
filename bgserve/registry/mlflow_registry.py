"""The MLflow registry: resolve model and prompt URIs, build release bundles, move aliases.

MLflow keeps prompts as registered models tagged ``mlflow.prompt.is_prompt=true``; this
module never lets one pass for the other. Every MLflow failure is translated (see
:mod:`bgserve.registry.errors`): a missing thing is :class:`NotFound`, a refused value
:class:`InvalidInput`, anything else (unreachable server, database error)
:class:`RegistryUnavailable`.
"""

from __future__ import annotations

import threading
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from bgserve.domain.release import (
    RegistryRef,
    ResolvedRelease,
    parse_uri,
    validate_name,
)
from bgserve.errors import InvalidInput, NotFound
from bgserve.evaluation.prompt_spec import PromptSpec
from bgserve.registry.aliases import (
    PARTS,
    Part,
    ReleaseParts,
    alias_version,
    move_deployment_aliases,
)
from bgserve.registry.bundling import BUNDLE_CODE, BUNDLE_EXPERIMENT, log_bundle
from bgserve.registry.errors import is_absent, translate_errors
from bgserve.registry.lookup import (
    is_model,
    is_prompt,
    model_alias,
    prompt_alias,
    prompt_version,
    require_model,
    require_prompt,
)
from bgserve.registry.session import (
    beside_sqlite,
    bound_mlflow_http,
    ensure_experiment,
    mlflow_uris,
)

__all__ = [
    "BUNDLE_CODE",
    "BUNDLE_EXPERIMENT",
    "PARTS",
    "MlflowRegistry",
    "Part",
    "ReleaseParts",
    "beside_sqlite",
    "bound_mlflow_http",
    "ensure_experiment",
    "is_absent",
    "mlflow_uris",
    "translate_errors",
]


class MlflowRegistry:
    """bgserve's view of one MLflow tracking store and model/prompt registry.

    Uses its own ``MlflowClient``; MLflow's process-wide URIs are touched only for the
    length of a ``log_model`` call. Every method raises only bgserve errors.
    """

    def __init__(
        self,
        tracking_uri: str | None,
        registry_uri: str | None,
        bundle_name_template: str = "bgserve.{release}",
        artifact_location: str | None = None,
    ) -> None:
        """Remember where MLflow is; nothing is contacted yet.

        ``artifact_location`` is where new experiments keep artifacts; for a SQLite store
        it defaults to ``mlartifacts/`` beside the database file.

        Raises:
            InvalidInput: ``bundle_name_template`` has a field other than ``{release}``.
        """
        try:
            bundle_name_template.format(release="r")
        except (KeyError, IndexError, ValueError) as exc:
            raise InvalidInput(
                f"bundle_name_template {bundle_name_template!r} may use only the field "
                "'{release}'",
                field="bundle_name_template",
            ) from exc
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.bundle_name_template = bundle_name_template
        self.artifact_location = artifact_location or beside_sqlite(tracking_uri)
        self._client: Any = None
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The ``MlflowClient``, made on first use (a SQLite store is created then).

        Raises:
            RegistryUnavailable: the store cannot be opened.
        """
        with self._client_lock:
            if self._client is None:
                with translate_errors("opening the MLflow store"):
                    self._client = mlflow.MlflowClient(
                        tracking_uri=self.tracking_uri, registry_uri=self.registry_uri
                    )
            return self._client

    def uris(self) -> Any:
        """A context in which MLflow's fluent API uses this registry's stores."""
        return mlflow_uris(self.tracking_uri, self.registry_uri)

    # --- resolving ---------------------------------------------------------------

    def resolve_model(self, ref: RegistryRef) -> int:
        """The fixed version that ``ref`` (a version or an @alias) names.

        Raises:
            NotFound: no such model (a prompt is not a model), version or alias.
            RegistryUnavailable: MLflow cannot be reached.
        """
        with translate_errors(f"resolving {ref.uri}"):
            require_model(self.client, ref.name)
            if ref.alias is not None:
                return model_alias(self.client, ref.name, ref.alias)
            try:
                return int(self.client.get_model_version(ref.name, str(ref.version)).version)
            except MlflowException as exc:
                if not is_absent(exc):
                    raise
                raise NotFound(f"model {ref.name!r} has no version {ref.version}") from exc

    def resolve_prompt(self, ref: RegistryRef) -> int:
        """The fixed version that ``ref`` (a version or an @alias) names.

        Raises:
            NotFound: no such prompt (a model is not a prompt), version or alias.
            RegistryUnavailable: MLflow cannot be reached.
        """
        with translate_errors(f"resolving {ref.uri}"):
            require_prompt(self.client, ref.name)
            if ref.alias is not None:
                version = prompt_alias(self.client, ref.name, ref.alias)
                if version is None:
                    raise NotFound(f"prompt {ref.name!r} has no alias {ref.alias!r}")
                return version
            return int(prompt_version(self.client, ref.name, ref.version or 0).version)

    def get_prompt_template(self, name: str, version: int) -> str:
        """The text template of prompt ``name`` at ``version``.

        Raises:
            NotFound: no such prompt or version.
            InvalidInput: the version is a chat prompt, not a text template.
            RegistryUnavailable: MLflow cannot be reached.
        """
        with translate_errors(f"reading prompts:/{name}/{version}"):
            require_prompt(self.client, name)
            prompt = prompt_version(self.client, name, version)
        if not prompt.is_text_prompt or not isinstance(prompt.template, str):
            raise InvalidInput(f"prompts:/{name}/{version} is a chat prompt: use a text template")
        return prompt.template

    def get_prompt_spec(self, name: str, version: int) -> PromptSpec:
        """Prompt ``name`` at ``version``: text or chat, with model_config and response_format.
        The one reader of prompt versions (releases, bundles and comparisons).

        Raises:
            NotFound: no such prompt or version.
            InvalidInput: a chat message without a string role and content.
            RegistryUnavailable: MLflow cannot be reached.
        """
        with translate_errors(f"reading prompts:/{name}/{version}"):
            require_prompt(self.client, name)
            prompt = prompt_version(self.client, name, version)
        return PromptSpec.of(
            prompt.template,
            prompt.model_config,
            prompt.response_format,
            f"prompts:/{name}/{version}",
        )

    # --- releases ----------------------------------------------------------------

    def bundle_name(self, release: str) -> str:
        """The registered model name of release ``release``'s bundle."""
        return self.bundle_name_template.format(release=release)

    def register_release(self, name: str, model_uri: str, prompt_uri: str) -> ResolvedRelease:
        """Resolve both URIs to fixed versions, then build and register the release bundle.

        Raises:
            InvalidInput: a malformed name or URI, or a prompt (text or chat) without variables.
            NotFound: the model, prompt, version or alias does not exist.
            RegistryUnavailable: MLflow cannot be reached or failed to store the bundle.
        """
        validate_name(name, "name")
        model = parse_uri(model_uri, "models", "model_uri")
        prompt = parse_uri(prompt_uri, "prompts", "prompt_uri")
        model = model.pinned(self.resolve_model(model))
        prompt = prompt.pinned(self.resolve_prompt(prompt))
        spec = self.get_prompt_spec(prompt.name, prompt.version or 0)
        columns = spec.variables
        if not columns:
            raise InvalidInput(
                f"{prompt.uri} has no {{{{variable}}}}: a bundle needs at least one input",
                field="prompt_uri",
            )
        tags = {
            "bgserve.release": name,
            "bgserve.model_uri": model.uri,
            "bgserve.prompt_uri": prompt.uri,
            "bgserve.model_ref": model_uri,
            "bgserve.prompt_ref": prompt_uri,
        }
        bundle = self.bundle_name(name)
        with translate_errors(f"registering bundle {bundle!r}"):
            version = log_bundle(
                self.client,
                self.uris(),
                self.artifact_location,
                bundle,
                model,
                prompt,
                spec.bundle_config(),
                columns,
                tags,
            )
        return ResolvedRelease(
            model.name, model.version or 0, prompt.name, prompt.version or 0, bundle, version
        )

    # --- aliases -----------------------------------------------------------------

    def move_aliases(
        self, deployment: str, live: ReleaseParts, previous: ReleaseParts | None
    ) -> None:
        """Point ``<deployment>-live`` at ``live``'s model, prompt and bundle versions and
        ``<deployment>-previous`` at ``previous``'s (or remove it). Idempotent.

        Where live and previous use different names for a part, no ``-live`` alias stays
        on the previous name and no ``-previous`` alias on the live name.

        Raises:
            NotFound: a named model, prompt or version no longer exists.
            RegistryUnavailable: MLflow cannot be reached.
        """
        with translate_errors(f"moving the aliases of deployment {deployment!r}"):
            move_deployment_aliases(self.client, deployment, live, previous)

    def alias_versions(
        self, deployment: str, *, model_name: str, prompt_name: str, bundle_name: str
    ) -> dict[str, dict[str, int | None]]:
        """Where ``<deployment>-live`` and ``-previous`` point on these three names.

        ``{"model": {"live": 3, "previous": 2}, "prompt": {...}, "bundle": {...}}``;
        ``None`` where the alias is not set.

        Raises:
            NotFound: a named model or prompt does not exist.
            RegistryUnavailable: MLflow cannot be reached.
        """
        names: dict[Part, str] = {"model": model_name, "prompt": prompt_name, "bundle": bundle_name}
        with translate_errors(f"reading the aliases of deployment {deployment!r}"):
            return {
                part: {
                    slot: alias_version(self.client, part, name, f"{deployment}-{slot}")
                    for slot in ("live", "previous")
                }
                for part, name in names.items()
            }

    # --- prompts -----------------------------------------------------------------

    def push_prompt(
        self,
        name: str,
        template: str,
        commit_message: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> tuple[int, bool]:
        """Register ``template`` as a new version of prompt ``name`` unless the latest
        version already has exactly this text. Returns ``(version, created)``.

        Raises:
            InvalidInput: ``name`` is a registered model, or MLflow refuses the prompt.
            RegistryUnavailable: MLflow cannot be reached.
        """
        with translate_errors(f"pushing prompt {name!r}"):
            if is_prompt(self.client, name):
                latest = self.client.get_prompt_version_by_alias(name, "latest")
                if latest.template == template:
                    return int(latest.version), False
            elif is_model(self.client, name):
                raise InvalidInput(
                    f"{name!r} is a registered model, not a prompt: choose another prompt name",
                    field="name",
                )
            created = self.client.register_prompt(
                name, template, commit_message=commit_message, tags=tags
            )
            return int(created.version), True
