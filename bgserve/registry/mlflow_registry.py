"""The MLflow registry: resolve model and prompt URIs, build release bundles, move aliases.

MLflow keeps prompts as registered models tagged ``mlflow.prompt.is_prompt=true``; this
module never lets one pass for the other. Every MLflow failure is translated here:
a missing thing is :class:`NotFound`, a refused value :class:`InvalidInput`, anything
else (unreachable server, database error) :class:`RegistryUnavailable`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

import mlflow
import requests
from mlflow.entities.model_registry import PromptVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from sqlalchemy.exc import SQLAlchemyError

from bgserve.domain.release import RegistryRef, ResolvedRelease, parse_uri, validate_name
from bgserve.domain.template import variables
from bgserve.errors import BgserveError, InvalidInput, NotFound, RegistryUnavailable

BUNDLE_CODE = Path(__file__).with_name("bundle_model.py")
BUNDLE_EXPERIMENT = "bgserve-bundles"
Part = Literal["model", "prompt", "bundle"]
PARTS: tuple[Part, ...] = ("model", "prompt", "bundle")

_NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"})
_REFUSED = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "INVALID_STATE"})
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
# MLflow's fluent API reads process-wide URIs; one swap at a time keeps them consistent.
_URI_LOCK = threading.RLock()


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


def bound_mlflow_http(max_retries: int, timeout: int, backoff_factor: int) -> dict[str, str]:
    """Bound MLflow's HTTP retries and timeout for this process, where the user did not.

    MLflow retries a failed request 7 times with exponential backoff by default, so an
    unreachable server blocks a call for minutes; bgserve answers 503 within seconds
    instead. Variables already set in the environment are left alone. Returns what was set.
    """
    defaults = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(max_retries),
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(backoff_factor),
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.2",
    }
    applied = {k: v for k, v in defaults.items() if k not in os.environ}
    os.environ.update(applied)
    return applied


@contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Turn MLflow, database and HTTP failures met while doing ``action`` into bgserve errors.

    Raises:
        NotFound, InvalidInput, RegistryUnavailable: translated, ``from`` the original.
    """
    try:
        yield
    except BgserveError:
        raise
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND:
            raise NotFound(f"{action}: {exc.message}") from exc
        if exc.error_code in _REFUSED:
            raise InvalidInput(f"{action}: {exc.message}") from exc
        raise RegistryUnavailable(f"MLflow registry failed while {action}: {exc.message}") from exc
    except (SQLAlchemyError, requests.RequestException, OSError) as exc:
        raise RegistryUnavailable(f"MLflow registry unreachable while {action}: {exc}") from exc


@contextmanager
def mlflow_uris(tracking_uri: str | None, registry_uri: str | None) -> Iterator[None]:
    """Point MLflow's process-wide URIs at these stores for the block, then restore them.

    Only for MLflow calls that have no client form (``log_model``); holds a lock meanwhile.
    """
    tracking_utils = mlflow.tracking._tracking_service.utils
    registry_utils = mlflow.tracking._model_registry.utils
    with _URI_LOCK:
        saved_env = {key: os.environ.get(key) for key in _URI_ENV}
        saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
        try:
            if tracking_uri:
                mlflow.set_tracking_uri(tracking_uri)
            if registry_uri:
                mlflow.set_registry_uri(registry_uri)
            yield
        finally:
            # None is how MLflow itself is told "no URI set" (it also unsets the env var).
            mlflow.set_tracking_uri(saved[0])  # type: ignore[arg-type]
            registry_utils._registry_uri = saved[1]
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def is_absent(exc: MlflowException) -> bool:
    """Whether MLflow says the thing asked for does not exist."""
    return exc.error_code in _NOT_FOUND


def ensure_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """The id of experiment ``name``, created (or restored) when needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(client.create_experiment(name, artifact_location=artifact_location))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return str(experiment.experiment_id)


def beside_sqlite(tracking_uri: str | None) -> str | None:
    """For a SQLite tracking store, an artifact root beside the database file.

    MLflow's own default is ``./mlruns`` under the working directory of whoever made the
    experiment first, which differs between ``bgserve serve`` and the CLI.
    """
    if not tracking_uri or not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return str(Path(path).resolve().parent / "mlartifacts")


def _bundle_signature(columns: list[str]) -> ModelSignature:
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, column) for column in columns]),
        outputs=Schema([ColSpec(DataType.string, "output")]),
    )


def _bundle_requirements(model_uri: str) -> list[str]:
    """The base model's pip requirements plus what the bundle code itself imports.

    Given explicitly, so MLflow does not load the bundle in a subprocess to infer them.
    """
    path = Path(mlflow.pyfunc.get_model_dependencies(model_uri))
    lines = [line.strip() for line in path.read_text().splitlines()]
    reqs = [line for line in lines if line and not line.startswith(("#", "-"))]
    for package, pin in (("mlflow", f"mlflow=={mlflow.__version__}"), ("pandas", "pandas")):
        if not any(req.lower().startswith(package) for req in reqs):
            reqs.append(pin)
    return reqs


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
            self._require_model(ref.name)
            if ref.alias is not None:
                return self._model_alias(ref.name, ref.alias)
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
            self._require_prompt(ref.name)
            if ref.alias is not None:
                version = self._prompt_alias(ref.name, ref.alias)
                if version is None:
                    raise NotFound(f"prompt {ref.name!r} has no alias {ref.alias!r}")
                return version
            return int(self._prompt_version(ref.name, ref.version or 0).version)

    def get_prompt_template(self, name: str, version: int) -> str:
        """The text template of prompt ``name`` at ``version``.

        Raises:
            NotFound: no such prompt or version.
            InvalidInput: the version is a chat prompt, not a text template.
            RegistryUnavailable: MLflow cannot be reached.
        """
        with translate_errors(f"reading prompts:/{name}/{version}"):
            self._require_prompt(name)
            prompt = self._prompt_version(name, version)
        if not prompt.is_text_prompt or not isinstance(prompt.template, str):
            raise InvalidInput(f"prompts:/{name}/{version} is a chat prompt: use a text template")
        return prompt.template

    def _require_model(self, name: str) -> None:
        try:
            self.client.get_registered_model(name)
        except MlflowException as exc:
            if not is_absent(exc):
                raise
            hint = f": {name!r} is a prompt, use prompts:/{name}" if self._is_prompt(name) else ""
            raise NotFound(f"model {name!r} does not exist{hint}") from exc

    def _require_prompt(self, name: str) -> None:
        if self.client.get_prompt(name) is None:
            hint = f": {name!r} is a model, use models:/{name}" if self._is_model(name) else ""
            raise NotFound(f"prompt {name!r} does not exist{hint}")

    def _is_prompt(self, name: str) -> bool:
        return self.client.get_prompt(name) is not None

    def _is_model(self, name: str) -> bool:
        try:
            self.client.get_registered_model(name)
        except MlflowException as exc:
            if is_absent(exc):
                return False
            raise
        return True

    def _model_alias(self, name: str, alias: str) -> int:
        try:
            return int(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if not is_absent(exc) and exc.error_code != "INVALID_PARAMETER_VALUE":
                raise
            raise NotFound(f"model {name!r} has no alias {alias!r}") from exc

    def _prompt_alias(self, name: str, alias: str) -> int | None:
        try:
            return int(self.client.get_prompt_version_by_alias(name, alias).version)
        except MlflowException as exc:
            # A missing prompt alias is INVALID_PARAMETER_VALUE in the SQL and file stores.
            if not is_absent(exc) and exc.error_code != "INVALID_PARAMETER_VALUE":
                raise
            return None

    def _prompt_version(self, name: str, version: int) -> PromptVersion:
        prompt: PromptVersion | None
        try:
            prompt = self.client.get_prompt_version(name, str(version))
        except MlflowException as exc:
            if not is_absent(exc):
                raise
            prompt = None
        if prompt is None:
            raise NotFound(f"prompt {name!r} has no version {version}")
        return prompt

    # --- releases ----------------------------------------------------------------

    def bundle_name(self, release: str) -> str:
        """The registered model name of release ``release``'s bundle."""
        return self.bundle_name_template.format(release=release)

    def register_release(self, name: str, model_uri: str, prompt_uri: str) -> ResolvedRelease:
        """Resolve both URIs to fixed versions, then build and register the release bundle.

        Raises:
            InvalidInput: a malformed name or URI, or a template without variables.
            NotFound: the model, prompt, version or alias does not exist.
            RegistryUnavailable: MLflow cannot be reached or failed to store the bundle.
        """
        validate_name(name, "name")
        model = parse_uri(model_uri, "models", "model_uri")
        prompt = parse_uri(prompt_uri, "prompts", "prompt_uri")
        model = model.pinned(self.resolve_model(model))
        prompt = prompt.pinned(self.resolve_prompt(prompt))
        template = self.get_prompt_template(prompt.name, prompt.version or 0)
        columns = variables(template)
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
            version = self._log_bundle(bundle, model, prompt, template, columns, tags)
        return ResolvedRelease(
            model.name, model.version or 0, prompt.name, prompt.version or 0, bundle, version
        )

    def _log_bundle(
        self,
        bundle: str,
        model: RegistryRef,
        prompt: RegistryRef,
        template: str,
        columns: list[str],
        tags: dict[str, str],
    ) -> int:
        experiment_id = ensure_experiment(self.client, BUNDLE_EXPERIMENT, self.artifact_location)
        with self.uris():
            requirements = _bundle_requirements(model.uri)
            nested = mlflow.active_run() is not None
            with mlflow.start_run(experiment_id=experiment_id, run_name=bundle, nested=nested):
                info = mlflow.pyfunc.log_model(
                    name="bundle",
                    python_model=str(BUNDLE_CODE),
                    artifacts={"base_model": model.uri},
                    model_config={"template": template, "variables": columns},
                    signature=_bundle_signature(columns),
                    pip_requirements=requirements,
                    prompts=[prompt.uri],
                    registered_model_name=bundle,
                    tags=tags,
                )
        return int(info.registered_model_version)

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
        live_alias, previous_alias = f"{deployment}-live", f"{deployment}-previous"
        with translate_errors(f"moving the aliases of deployment {deployment!r}"):
            for part in PARTS:
                self._set_alias(part, *_part(live, part), live_alias)
            for part in PARTS:
                live_name, _ = _part(live, part)
                if previous is None:
                    self._delete_alias(part, live_name, previous_alias)
                    continue
                previous_name, previous_version = _part(previous, part)
                self._set_alias(part, previous_name, previous_version, previous_alias)
                if previous_name != live_name:
                    self._delete_alias(part, previous_name, live_alias)
                    self._delete_alias(part, live_name, previous_alias)

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
                    slot: self._alias_version(part, name, f"{deployment}-{slot}")
                    for slot in ("live", "previous")
                }
                for part, name in names.items()
            }

    def _alias_version(self, part: Part, name: str, alias: str) -> int | None:
        if part == "prompt":
            self._require_prompt(name)
            return self._prompt_alias(name, alias)
        version = self.client.get_registered_model(name).aliases.get(alias)
        return None if version is None else int(version)

    def _set_alias(self, part: Part, name: str, version: int, alias: str) -> None:
        if part == "prompt":
            self.client.set_prompt_alias(name, alias, version)
        else:
            self.client.set_registered_model_alias(name, alias, str(version))

    def _delete_alias(self, part: Part, name: str, alias: str) -> None:
        if part == "prompt":
            self.client.delete_prompt_alias(name, alias)
        else:
            self.client.delete_registered_model_alias(name, alias)

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
            if self._is_prompt(name):
                latest = self.client.get_prompt_version_by_alias(name, "latest")
                if latest.template == template:
                    return int(latest.version), False
            elif self._is_model(name):
                raise InvalidInput(
                    f"{name!r} is a registered model, not a prompt: choose another prompt name",
                    field="name",
                )
            created = self.client.register_prompt(
                name, template, commit_message=commit_message, tags=tags
            )
            return int(created.version), True


def _part(release: ReleaseParts, part: Part) -> tuple[str, int]:
    if part == "model":
        return release.model_name, release.model_version
    if part == "prompt":
        return release.prompt_name, release.prompt_version
    return release.bundle_name, release.bundle_version
