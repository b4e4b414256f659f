"""Register an LLM base model in MLflow: a GGUF file, or an OpenAI-compatible endpoint.

Either kind becomes a pyfunc model version (the code in :mod:`bgserve.llm.llm_model`)
that a release can pin like any other model. A GGUF file is copied into the version as
an artifact; an endpoint version pins only its base URL, its served model name and the
*name* of the environment variable that holds its key, never the key.
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
    """What to register: exactly one of a GGUF file or an endpoint (URL + model name)."""

    name: str
    gguf: Path | None = None
    openai_url: str | None = None
    openai_model: str | None = None
    api_key_env: str | None = None

    @property
    def kind(self) -> LlmKind:
        return "gguf" if self.gguf is not None else "openai"

    def checked(self) -> LlmSpec:
        """This spec if it holds together, with the GGUF path resolved.

        Raises:
            InvalidInput: naming the field at fault: a bad name, both or neither kind,
                a missing or non-GGUF file, a URL that is not http(s), a missing model
                name, or an environment variable name that is not one.
        """
        if not _MODEL_NAME.fullmatch(self.name or ""):
            raise InvalidInput(
                f"name {self.name!r} is not an MLflow model name: use letters, digits, "
                "'.', '_' and '-', starting with a letter or digit",
                field="name",
            )
        endpoint = self.openai_url is not None or self.openai_model is not None
        if (self.gguf is not None) == endpoint:
            raise InvalidInput(
                "give exactly one kind of LLM: gguf (a GGUF file), or openai_url with "
                "openai_model (an OpenAI-compatible endpoint)",
                field="gguf" if self.gguf is not None else "openai_url",
            )
        if self.gguf is not None:
            if self.api_key_env is not None:
                raise InvalidInput(
                    "api_key_env is for an endpoint, not a GGUF file", field="api_key_env"
                )
            return LlmSpec(self.name, gguf=check_gguf(self.gguf))
        self._check_endpoint()
        return self

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

    def model_config(self) -> dict[str, Any]:
        """The LLM model version's config (see :mod:`bgserve.llm.llm_model`)."""
        if self.kind == "gguf":
            return {"kind": "gguf", "n_ctx": 2048, "n_threads": 0}
        return {
            "kind": "openai",
            "base_url": self.openai_url,
            "model": self.openai_model,
            "api_key_env": self.api_key_env,
        }


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
    endpoint serves (``openai``), the endpoint's base URL and its key's variable *name*."""

    kind: LlmKind
    openai_model: str | None = None
    openai_url: str | None = None
    api_key_env: str | None = None


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
        return LlmBase("gguf")
    if config.get("kind") == "openai":
        return LlmBase(
            "openai", config.get("model"), config.get("base_url"), config.get("api_key_env")
        )
    return None
