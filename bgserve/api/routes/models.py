"""POST /models/llm: register an LLM base model (a GGUF file, by path or by storage URI, or
an OpenAI-compatible endpoint)."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from bgserve.api.deps import DeployerDep, LlmModelsDep
from bgserve.api.guard import GuardedRoute
from bgserve.api.schemas import WRITE, Strict
from bgserve.llm.references import SecretKeyRef
from bgserve.registry.llm_models import LlmKind

router = APIRouter(prefix="/models", tags=["models"], route_class=GuardedRoute)


class SecretRef(Strict):
    name: str = Field(description="Name of a Secret in the slots' namespace", examples=["llm"])
    key: str = Field(description="The key within that Secret", examples=["api-key"])


class LlmCreate(Strict):
    name: str = Field(description="MLflow registered model name", examples=["smollm2"])
    gguf: str | None = Field(
        None,
        description="Absolute path of a GGUF file on the server's machine (kind gguf), under "
        "a directory listed in BGSERVE_LLM_GGUF_DIRS (none by default: refused with a 403)",
    )
    openai_url: str | None = Field(
        None, description="OpenAI base URL of an endpoint, ending in /v1 (kind openai)"
    )
    openai_model: str | None = Field(None, description="The model name the endpoint serves")
    api_key_env: str | None = Field(
        None, description="NAME of the environment variable holding the endpoint's key"
    )
    api_key_secret: SecretRef | None = Field(
        None,
        description="On Kubernetes, the Secret key that fills api_key_env in the slot (its "
        "name and key are stored, never its value); needs api_key_env. The local backend "
        "cannot read Secrets: there the slot reads api_key_env from bgserve's environment",
    )
    gguf_uri: str | None = Field(
        None,
        description="Storage URI of a GGUF file (s3://, gs://, hf://, pvc://; kind gguf, "
        "Kubernetes only): registered by reference, nothing is copied; the slot's storage "
        "initializer fetches it. The local backend refuses such a model",
    )


class LlmOut(BaseModel):
    model_uri: str = Field(examples=["models:/smollm2/1"])
    name: str
    version: int
    kind: LlmKind


@router.post("/llm", status_code=status.HTTP_201_CREATED, response_model=LlmOut, responses=WRITE)
def register(body: LlmCreate, models: LlmModelsDep, _who: DeployerDep) -> LlmOut:
    """Register an LLM as a new MLflow model version that a release can pin. A GGUF path
    must lie under a directory of ``BGSERVE_LLM_GGUF_DIRS`` (403 otherwise)."""
    done = models.register(
        body.name,
        gguf=body.gguf,
        openai_url=body.openai_url,
        openai_model=body.openai_model,
        api_key_env=body.api_key_env,
        api_key_secret=_secret(body.api_key_secret),
        gguf_uri=body.gguf_uri,
    )
    return LlmOut(model_uri=done.model_uri, name=done.name, version=done.version, kind=done.kind)


def _secret(ref: SecretRef | None) -> SecretKeyRef | None:
    return None if ref is None else SecretKeyRef(ref.name, ref.key)
