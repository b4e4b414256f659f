"""Register an LLM base model in MLflow: a GGUF file, or an OpenAI-compatible endpoint.

Either kind becomes a pyfunc model version (the code in :mod:`bgserve.llm.llm_model`)
that a release can pin like any other model. A GGUF file is copied into the version as
an artifact, or, for Kubernetes, referenced by its storage URI (nothing is copied: the
slot's storage initializer fetches it); an endpoint version pins only its base URL, its
served model name and *where* its key is: the name of the environment variable the slot
reads, and on Kubernetes the Secret key that fills it. Never the key.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import mlflow
import yaml
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema

from bgserve.errors import InvalidInput
from bgserve.llm.gguf import check_gguf
from bgserve.llm.references import SecretKeyRef, check_secret_ref, check_weights_uri
from bgserve.registry.errors import translate_errors
from bgserve.registry.lookup import is_prompt
from bgserve.registry.session import ensure_experiment

LLM_CODE = Path(__file__).parent.parent / "llm" / "llm_model.py"
LLM_EXPERIMENT = "bgserve-llms"
LLAMA_CPP_REQUIREMENT = "llama-cpp-python==0.3.36"
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

LlmKind = Literal["gguf", "openai"]


@dataclass(frozen=True)
class LlmSpec:
    """What to register: exactly one of a GGUF file, a GGUF's storage URI (``gguf_uri``,
    Kubernetes only) or an endpoint (URL + model name, optionally where its key is)."""

    name: str
    gguf: Path | None = None
    openai_url: str | None = None
    openai_model: str | None = None
    api_key_env: str | None = None
    api_key_secret: SecretKeyRef | None = None
    gguf_uri: str | None = None

    @property
    def kind(self) -> LlmKind:
        return "gguf" if self.gguf is not None or self.gguf_uri is not None else "openai"

    def checked(self) -> LlmSpec:
        """This spec if it holds together, with the GGUF path resolved.

        Raises:
            InvalidInput: naming the field at fault: a bad name, not exactly one kind,
                a missing or non-GGUF file, a storage URI of another scheme, a URL that
                is not http(s), a missing model name, an environment variable name that
                is not one, or a Secret reference that is bad or has no variable to fill.
        """
        if not _MODEL_NAME.fullmatch(self.name or ""):
            raise InvalidInput(
                f"name {self.name!r} is not an MLflow model name: use letters, digits, "
                "'.', '_' and '-', starting with a letter or digit",
                field="name",
            )
        self._check_one_kind()
        if self.gguf_uri is not None:
            self._check_no_key()
            return LlmSpec(self.name, gguf_uri=check_weights_uri(self.gguf_uri))
        if self.gguf is not None:
            self._check_no_key()
            return LlmSpec(self.name, gguf=check_gguf(self.gguf))
        self._check_endpoint()
        return self

    def _check_one_kind(self) -> None:
        kinds = {
            "gguf": self.gguf is not None,
            "gguf_uri": self.gguf_uri is not None,
            "openai_url": self.openai_url is not None or self.openai_model is not None,
        }
        given = [field for field, present in kinds.items() if present]
        if len(given) != 1:
            raise InvalidInput(
                "give exactly one kind of LLM: gguf (a GGUF file), gguf_uri (a GGUF's "
                "s3://, gs://, hf:// or pvc:// URI, for Kubernetes), or openai_url with "
                "openai_model (an OpenAI-compatible endpoint)",
                field=given[0] if given else "openai_url",
            )

    def _check_no_key(self) -> None:
        for field in ("api_key_env", "api_key_secret"):
            if getattr(self, field) is not None:
                raise InvalidInput(f"{field} is for an endpoint, not a GGUF file", field=field)

    def _check_endpoint(self) -> None:
        url = urlsplit(self.openai_url or "")
        if url.scheme not in ("http", "https") or not url.netloc:
            raise InvalidInput(
                f"openai_url {self.openai_url!r} is not an http(s) URL: give the OpenAI base "
                "URL, e.g. http://host:8000/v1",
                field="openai_url",
            )
        if not self.openai_model:
            raise InvalidInput(
                "openai_model is missing: give the model name the endpoint serves",
                field="openai_model",
            )
        if self.api_key_env is not None and not _ENV_NAME.fullmatch(self.api_key_env):
            raise InvalidInput(
                # The value is not echoed back: it may be the key itself, given by mistake.
                "api_key_env is not an environment variable name: give the NAME of the "
                "variable holding the key (letters, digits, '_'), never the key itself",
                field="api_key_env",
            )
        if self.api_key_secret is not None:
            if self.api_key_env is None:
                raise InvalidInput(
                    "api_key_secret needs api_key_env: the Secret's key fills that variable, "
                    "which the slot reads",
                    field="api_key_env",
                )
            check_secret_ref(self.api_key_secret)

    def model_config(self) -> dict[str, Any]:
        """The LLM model version's config (see :mod:`bgserve.llm.llm_model`)."""
        if self.kind == "gguf":
            config: dict[str, Any] = {"kind": "gguf", "n_ctx": 2048, "n_threads": 0}
            if self.gguf_uri is not None:
                config["weights_uri"] = self.gguf_uri
            return config
        config = {
            "kind": "openai",
            "base_url": self.openai_url,
            "model": self.openai_model,
            "api_key_env": self.api_key_env,
        }
        if self.api_key_secret is not None:
            secret = self.api_key_secret
            config["api_key_secret"] = {"name": secret.name, "key": secret.key}
        return config


@dataclass(frozen=True)
class RegisteredLlm:
    """A registered LLM model version."""

    name: str
    version: int
    kind: LlmKind

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def llm_signature() -> ModelSignature:
    """One string column ``prompt`` in, one string ``output`` out."""
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, "prompt")]),
        outputs=Schema([ColSpec(DataType.string, "output")]),
    )


def llm_requirements(kind: LlmKind) -> list[str]:
    """What the LLM model code needs wherever it is loaded."""
    engine = LLAMA_CPP_REQUIREMENT if kind == "gguf" else "httpx"
    return [f"mlflow=={mlflow.__version__}", "pandas", engine]


def register_llm(registry: Any, spec: LlmSpec) -> RegisteredLlm:
    """Register ``spec`` as a new version of model ``spec.name`` in ``registry``
    (a :class:`~bgserve.registry.mlflow_registry.MlflowRegistry`). Not idempotent: each
    call makes a new version.

    Raises:
        InvalidInput: the spec does not hold together (see :meth:`LlmSpec.checked`), or
            the name is a prompt's.
        RegistryUnavailable: MLflow cannot be reached or failed to store the model.
    """
    spec = spec.checked()
    with translate_errors(f"registering LLM {spec.name!r}"):
        if is_prompt(registry.client, spec.name):
            raise InvalidInput(
                f"{spec.name!r} is a prompt, not a model: choose another name", field="name"
            )
        experiment_id = ensure_experiment(
            registry.client, LLM_EXPERIMENT, registry.artifact_location
        )
        with registry.uris():
            nested = mlflow.active_run() is not None
            with mlflow.start_run(experiment_id=experiment_id, run_name=spec.name, nested=nested):
                info = _log(spec)
    return RegisteredLlm(spec.name, int(info.registered_model_version), spec.kind)


def _log(spec: LlmSpec) -> Any:
    # A GGUF given by storage URI is not copied: the slot's storage initializer fetches it.
    artifacts = {"gguf": str(spec.gguf)} if spec.gguf is not None else None
    with warnings.catch_warnings():
        # An input example would load the LLM in this process just to check it.
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        return mlflow.pyfunc.log_model(
            name="llm",
            python_model=str(LLM_CODE),
            artifacts=artifacts,
            model_config=spec.model_config(),
            signature=llm_signature(),
            pip_requirements=llm_requirements(spec.kind),
            registered_model_name=spec.name,
            tags={"bgserve.llm.kind": spec.kind},
        )


@dataclass(frozen=True)
class LlmBase:
    """What the registry records of an LLM model version: its kind, the model name an
    endpoint serves (``openai``), the endpoint's base URL, its key's variable *name* and
    the Secret key that fills it on Kubernetes, and a GGUF's storage URI (``gguf``
    registered by reference)."""

    kind: LlmKind
    openai_model: str | None = None
    openai_url: str | None = None
    api_key_env: str | None = None
    api_key_secret: SecretKeyRef | None = None
    weights_uri: str | None = None


def read_llm(registry: Any, name: str, version: int) -> LlmBase | None:
    """The LLM base of model ``name`` at ``version``, or None for a model that is not an
    LLM registered by :func:`register_llm`. Reads only the version's ``MLmodel`` (never the
    weights).

    Raises:
        NotFound: no such model version.
        RegistryUnavailable: MLflow cannot be reached.
    """
    with translate_errors(f"reading models:/{name}/{version}"), registry.uris():
        local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}/MLmodel")
    mlmodel = yaml.safe_load(Path(local).read_text()) or {}
    pyfunc = (mlmodel.get("flavors") or {}).get("python_function") or {}
    config = pyfunc.get("config") or {}
    if Path(str(pyfunc.get("model_code_path", ""))).name != LLM_CODE.name:
        return None
    if config.get("kind") == "gguf":
        return LlmBase("gguf", weights_uri=config.get("weights_uri"))
    if config.get("kind") == "openai":
        return LlmBase(
            "openai",
            config.get("model"),
            config.get("base_url"),
            config.get("api_key_env"),
            _secret_of(config.get("api_key_secret")),
        )
    return None


def _secret_of(stored: Any) -> SecretKeyRef | None:
    if not isinstance(stored, dict):
        return None
    return SecretKeyRef(str(stored.get("name", "")), str(stored.get("key", "")))
