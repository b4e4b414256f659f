"""Registering LLM base models for remote callers (``POST /models/llm``).

The caller is not on the server's machine: a GGUF path is read only under the directories
the operator listed (``BGSERVE_LLM_GGUF_DIRS``), symlinks and ``..`` resolved first. The
CLI registers with the user's own rights and does not come through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bgserve.llm.gguf import confine_gguf
from bgserve.llm.references import SecretKeyRef
from bgserve.registry.llm_models import LlmSpec, RegisteredLlm, register_llm
from bgserve.registry.mlflow_registry import MlflowRegistry

__all__ = ["LlmModels"]


class LlmModels:
    """Registers LLMs as MLflow model versions on behalf of API callers."""

    def __init__(self, registry: MlflowRegistry, gguf_dirs: Sequence[Path]) -> None:
        self._registry = registry
        self._gguf_dirs = tuple(gguf_dirs)

    def register(
        self,
        name: str,
        *,
        gguf: str | None = None,
        openai_url: str | None = None,
        openai_model: str | None = None,
        api_key_env: str | None = None,
        api_key_secret: SecretKeyRef | None = None,
        gguf_uri: str | None = None,
    ) -> RegisteredLlm:
        """A new model version of ``name``: a GGUF file, a GGUF's storage URI (read by a
        Kubernetes slot's storage initializer; nothing is read here) or an OpenAI-compatible
        endpoint, whose key may be named as a Secret key (only its name and key are stored).

        Raises:
            Forbidden: ``gguf`` lies outside the allowed directories (or none are set).
            InvalidInput: the fields do not name exactly one kind, the file is not GGUF,
                or a reference (URI, variable, Secret) is malformed; naming the field.
            RegistryUnavailable: MLflow cannot be reached.
        """
        confined = None if gguf is None else confine_gguf(Path(gguf), self._gguf_dirs)
        spec = LlmSpec(
            name,
            gguf=confined,
            openai_url=openai_url,
            openai_model=openai_model,
            api_key_env=api_key_env,
            api_key_secret=api_key_secret,
            gguf_uri=gguf_uri,
        )
        return register_llm(self._registry, spec)
