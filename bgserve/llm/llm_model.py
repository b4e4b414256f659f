"""An LLM base model: a GGUF file run by llama.cpp, or an OpenAI-compatible endpoint.

Logged as an MLflow "model from code", so this file is copied into every LLM model
version and loaded wherever it is served (a slot, a KServe or Seldon server). It must
stay self-contained: it imports MLflow, pandas and the standard library, plus
``llama_cpp`` (kind ``gguf``) or ``httpx`` (kind ``openai``) when loaded.

Model config: ``kind`` (``gguf`` or ``openai``); for ``gguf`` ``n_ctx`` and ``n_threads``
(0: half the CPUs the process may use; ``$BGSERVE_LLM_THREADS`` wins), with the file as
artifact ``gguf``, or, registered by reference, ``weights_uri`` (its storage URI: the file
is looked for where a Kubernetes storage initializer put it, ``$BGSERVE_LLM_WEIGHTS_DIR``;
nothing is downloaded here); for ``openai`` ``base_url`` (the OpenAI base URL, ending in
``/v1``), ``model`` (the served model name), ``api_key_env`` (the NAME of the environment
variable holding the key, read at every call; the key itself is never stored) and
optionally ``api_key_secret`` (``{name, key}``: the Kubernetes Secret key that fills that
variable in a pod; outside Kubernetes nothing fills it but the environment).

:meth:`LlmModel.chat` answers OpenAI chat.completion dicts (or an iterator of
chat.completion.chunk dicts, the last one carrying ``usage`` and no choices; an endpoint
that streams no usage gets one content chunk counted as one token and ``prompt_tokens`` 0);
``response_format`` is taken in OpenAI's form (``json_schema`` or ``json_object``).
:meth:`LlmModel.predict` answers one string per row of a ``prompt`` column, each row
sent as one user message.

An ``openai`` endpoint gets ``n``, ``tools``, ``tool_choice`` and ``parallel_tool_calls``
unchanged, and its answers (tool calls included) come back as it sent them. llama.cpp
(``gguf``) has no ``n``: a non-streamed request for ``n`` choices generates them one after
another (choice ``i`` with seed ``seed + i`` when a seed is set, so they differ), usage
counting the prompt once and every choice's tokens. Its chat handler makes a tool call
only when ``tool_choice`` names the function (sampling constrained to the function's
parameters schema); it never picks a tool itself, so ``tools`` without such a
``tool_choice`` is refused, as are streamed tools and a streamed ``n`` above 1.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
import pandas as pd
from mlflow.pyfunc.model import PythonModel, PythonModelContext

PROMPT_COLUMN = "prompt"
LLAMA_PARAMS = (
    "temperature",
    "max_tokens",
    "top_p",
    "stop",
    "seed",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
    "tools",
    "tool_choice",
)
MAX_CHOICES = 16


WEIGHTS_DIR_ENV = "BGSERVE_LLM_WEIGHTS_DIR"
# The thread count of the place serving the model (bgserve's llm_threads setting), which
# wins over the one registered with it.
THREADS_ENV = "BGSERVE_LLM_THREADS"
_log = logging.getLogger(__name__)


class LlmLoadError(Exception):
    """The LLM cannot be loaded here (a GGUF registered by reference without its file)."""


def gguf_from_storage(weights_uri: str, weights_dir: str | None) -> Path:
    """The GGUF file a storage initializer fetched from ``weights_uri`` into ``weights_dir``:
    the directory itself if it is the file, else the file the URI names, else the only
    ``.gguf`` file below it.

    Raises:
        LlmLoadError: no ``weights_dir`` (nothing fetched the file: not a Kubernetes slot),
            or no single GGUF file there.
    """
    if not weights_dir:
        raise LlmLoadError(
            f"this GGUF is registered by reference ({weights_uri}): only a Kubernetes slot, "
            f"whose storage initializer fetches it into ${WEIGHTS_DIR_ENV}, can load it. "
            "The local backend downloads nothing at run time: register the file itself with "
            "`bgserve models register-llm NAME --gguf PATH`"
        )
    root = Path(weights_dir)
    if root.is_file():
        return root
    found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".gguf")
    named = urlsplit(weights_uri).path.rstrip("/").rsplit("/", 1)[-1]
    same_name = [p for p in found if p.name == named]
    if same_name:
        return same_name[0]
    if len(found) == 1:
        return found[0]
    raise LlmLoadError(
        f"{root} holds {len(found)} GGUF files fetched from {weights_uri}: name the file "
        "in the URI (…/model.Q4_K_M.gguf)"
    )


class LlmError(Exception):
    """The LLM refused or failed a call; ``status_code`` is the HTTP status to answer."""

    def __init__(self, message: str, status_code: int = 502, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.param = param


def llama_response_format(response_format: Any) -> dict[str, Any] | None:
    """OpenAI's ``response_format`` in the form llama.cpp takes (``json_object`` + schema)."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return {"type": "json_object", "schema": schema} if schema else {"type": "json_object"}
    if kind == "json_object":
        return dict(response_format)
    return None


def answer_text(completion: dict[str, Any]) -> str:
    """The assistant text of a chat.completion dict ("" when it has none)."""
    choices = completion.get("choices") or [{}]
    return str((choices[0].get("message") or {}).get("content") or "")


def _produces(chunk: dict[str, Any]) -> bool:
    """Whether a chunk carries generated output: content or a tool call's part."""
    deltas = [choice.get("delta") or {} for choice in chunk.get("choices") or []]
    return any(delta.get("content") or delta.get("tool_calls") for delta in deltas)


def _choices(params: dict[str, Any], stream: bool) -> int:
    """The ``n`` a llama.cpp model can answer. Raises LlmError (400, ``n``)."""
    n = params.get("n")
    if n is None or n == 1:
        return 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_CHOICES:
        raise LlmError(
            f"n must be a whole number from 1 to {MAX_CHOICES}: this llama.cpp model "
            "generates the choices one after another",
            400,
            "n",
        )
    if stream:
        raise LlmError(
            "n must be 1 in a streamed request to this llama.cpp model: it generates "
            "choices one after another; ask without stream for several",
            400,
            "n",
        )
    return n


def _forced_tool(params: dict[str, Any], stream: bool) -> None:
    """Refuse tools llama.cpp's chat handler cannot honour. Raises LlmError (400)."""
    tools, choice = params.get("tools"), params.get("tool_choice")
    if choice == "none":  # the tools are only context: a plain answer is what is asked
        return
    if not tools:
        if choice is not None:
            raise LlmError("tool_choice needs tools to choose from", 400, "tool_choice")
        return
    if stream:
        raise LlmError(
            "tools cannot be streamed from this llama.cpp model: its streamed tool call "
            "repeats the call's id and name in every chunk, which clients join into a wrong "
            "name; ask without stream",
            400,
            "tools",
        )
    function = choice.get("function") if isinstance(choice, dict) else None
    named = function.get("name") if isinstance(function, dict) else None
    if named is None:
        raise LlmError(
            "this llama.cpp model calls a tool only when tool_choice names it "
            '({"type": "function", "function": {"name": ...}}): its chat handler picks no '
            f"tool itself, so tool_choice {choice!r} cannot be honoured",
            400,
            "tool_choice",
        )
    offered = {(t.get("function") or {}).get("name") for t in tools if isinstance(t, dict)}
    if named not in offered:
        raise LlmError(f"tool_choice names {named!r}, which is not in tools", 400, "tool_choice")


def _threads(registered: int) -> int:
    """llama.cpp's threads, for generation and for reading the prompt alike: the serving
    place's ``$BGSERVE_LLM_THREADS``, else the registered count, else half the CPUs this
    process may run on. (llama.cpp's own default reads the prompt on every core: beside a
    second slot or any other work its threads, which wait for each other by spinning,
    took turns on the cores and each answer cost 3x the CPU.)"""
    chosen = os.environ.get(THREADS_ENV, "").strip()
    if chosen:
        try:
            value = int(chosen)
        except ValueError:
            raise LlmLoadError(f"{THREADS_ENV}={chosen!r} is not a whole number") from None
        if value < 0:
            raise LlmLoadError(f"{THREADS_ENV}={value} is negative: give 0 or more threads")
        if value:
            return value
    if registered > 0:
        return registered
    return max(1, len(os.sched_getaffinity(0)) // 2)


class _Gguf:
    """One llama.cpp model; calls are serialised (a context serves one generation)."""

    def __init__(self, path: str, n_ctx: int, n_threads: int) -> None:
        from llama_cpp import Llama

        threads = _threads(n_threads)
        self.llm: Any = Llama(
            model_path=path,
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self.lock = threading.Lock()

    def refuse_unsupported(self, params: dict[str, Any], stream: bool) -> None:
        """Refuse what llama.cpp cannot answer as asked. Raises LlmError (400, the param)."""
        _choices(params, stream)
        _forced_tool(params, stream)

    def _kwargs(self, params: dict[str, Any], choice: int = 0) -> dict[str, Any]:
        kwargs = {key: params[key] for key in LLAMA_PARAMS if params.get(key) is not None}
        if "response_format" in kwargs:
            kwargs["response_format"] = llama_response_format(kwargs["response_format"])
        if choice and "seed" in kwargs:
            kwargs["seed"] += choice  # the same seed would give every choice the same answer
        return kwargs

    def complete(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            answers: list[dict[str, Any]] = [
                self.llm.create_chat_completion(messages=messages, **self._kwargs(params, i))
                for i in range(_choices(params, stream=False))
            ]
        return answers[0] if len(answers) == 1 else _as_choices(answers)

    def stream(
        self, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        with self.lock:
            chunks = self.llm.create_chat_completion(
                messages=messages, stream=True, **self._kwargs(params)
            )
            produced, finish, last = 0, None, None
            for chunk in chunks:
                choice = chunk["choices"][0] if chunk["choices"] else {}
                produced += _produces(chunk)
                finish = choice.get("finish_reason") or finish
                last = chunk
                yield chunk
            # llama.cpp streams one token a chunk but reports no usage; the context holds
            # prompt and answer, less the last sampled token when the length limit hit.
            prompt = max(0, self.llm.n_tokens - produced + (finish == "length"))
            yield _usage_chunk(last, prompt, produced)


def _as_choices(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """Separate completions of one prompt as one completion with a choice each: the
    prompt counted once, every choice's tokens."""
    choices = [{**answer["choices"][0], "index": i} for i, answer in enumerate(answers)]
    prompt = answers[0]["usage"]["prompt_tokens"]
    completion = sum(answer["usage"]["completion_tokens"] for answer in answers)
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    return {**answers[0], "choices": choices, "usage": usage}


def _usage_chunk(last: dict[str, Any] | None, prompt: int, completion: int) -> dict[str, Any]:
    base = last or {"id": f"chatcmpl-{uuid.uuid4()}", "created": int(time.time()), "model": ""}
    return {
        "id": base["id"],
        "object": "chat.completion.chunk",
        "created": base["created"],
        "model": base["model"],
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


class _OpenAI:
    """An OpenAI-compatible endpoint called with httpx; the key is read from the env."""

    def __init__(
        self, base_url: str, model: str, api_key_env: str | None, secret: str | None = None
    ) -> None:
        import httpx

        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.secret = secret
        self.client = httpx.Client(timeout=httpx.Timeout(600.0, connect=10.0))
        if self._key_unset():
            _log.warning(self._unset_key_hint())

    def _key_unset(self) -> bool:
        return bool(self.api_key_env) and not os.environ.get(self.api_key_env or "")

    def _unset_key_hint(self) -> str:
        hint = f"the key variable {self.api_key_env} is not set in this slot's environment"
        if self.secret:
            hint += (
                f"; on Kubernetes it is filled from the Secret key {self.secret}, which the "
                f"local backend cannot read: set {self.api_key_env} where bgserve runs"
            )
        return hint

    def refuse_unsupported(self, params: dict[str, Any], stream: bool) -> None:
        """Nothing: the endpoint takes every parameter and refuses what it must."""

    def _request(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        body = {**params, "model": self.model, "messages": messages}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return {"url": self.url, "json": body, "headers": headers}

    def complete(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        response = self._call(lambda: self.client.post(**self._request(messages, params)))
        self._raise_for_status(response.status_code, response.text)
        result: dict[str, Any] = response.json()
        return result

    def stream(
        self, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        request = self._request(messages, params)
        request["json"] |= {"stream": True, "stream_options": {"include_usage": True}}
        with self._call(lambda: self.client.stream("POST", **request)) as response:
            if response.status_code >= 400:
                self._raise_for_status(
                    response.status_code, response.read().decode(errors="replace")
                )
            produced, usage, last = 0, False, None
            for line in response.iter_lines():
                data = line[5:].strip() if line.startswith("data:") else ""
                if data == "[DONE]":
                    break
                if data:
                    last = json.loads(data)
                    usage = usage or bool(last.get("usage"))
                    produced += _produces(last)
                    yield last
        if not usage:
            # Some servers (llama.cpp's own) report no usage in streams: count one token a
            # content chunk, as they stream; the prompt's size is unknown here (0).
            yield _usage_chunk(last, 0, produced)

    def _raise_for_status(self, status: int, text: str) -> None:
        refused = status in (401, 403) and self._key_unset()
        _raise_for_status(status, text, f" ({self._unset_key_hint()})" if refused else "")

    def _call(self, send: Any) -> Any:
        import httpx

        try:
            return send()
        except httpx.TimeoutException as exc:
            raise LlmError(f"the LLM endpoint {self.url} timed out: {exc}", 504) from exc
        except httpx.HTTPError as exc:
            raise LlmError(f"the LLM endpoint {self.url} failed: {exc}", 502) from exc


def _raise_for_status(status: int, text: str, hint: str = "") -> None:
    if status < 400:
        return
    try:
        error = json.loads(text)["error"]
        message, param = error["message"], error.get("param")
    except (ValueError, KeyError, TypeError, AttributeError):
        message, param = text[:500], None
    # The client's mistakes stay theirs (the parameter named too); the endpoint's own
    # failures are a bad gateway.
    client = status < 500
    raise LlmError(
        f"the LLM endpoint answered {status}: {message}{hint}",
        status if client else 502,
        param if client and isinstance(param, str) else None,
    )


class LlmModel(PythonModel):
    """An LLM answering OpenAI chat calls; see the module docstring for its config."""

    gguf_path: str | None = None

    def load_context(self, context: PythonModelContext) -> None:
        config = context.model_config or {}
        self.kind: str = config["kind"]
        if self.kind == "gguf":
            self.gguf_path = self._gguf_file(context, config)
            n_ctx, n_threads = int(config.get("n_ctx", 2048)), int(config.get("n_threads", 0))
            self._engine: Any = _Gguf(self.gguf_path, n_ctx, n_threads)
        else:
            secret = config.get("api_key_secret") or {}
            named = f"{secret['name']}/{secret['key']}" if secret else None
            env = config.get("api_key_env")
            self._engine = _OpenAI(config["base_url"], config["model"], env, named)

    @staticmethod
    def _gguf_file(context: PythonModelContext, config: dict[str, Any]) -> str:
        if config.get("weights_uri"):
            weights_dir = os.environ.get(WEIGHTS_DIR_ENV)
            return str(gguf_from_storage(config["weights_uri"], weights_dir))
        return str(context.artifacts["gguf"])

    def chat(
        self, messages: list[dict[str, Any]], params: dict[str, Any], stream: bool = False
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """Answer ``messages`` with generation ``params`` (OpenAI names).

        Raises:
            LlmError: the endpoint refused or failed the call (its status kept for 4xx);
                400 naming the parameter llama.cpp cannot honour (see the module docstring).
        """
        self._engine.refuse_unsupported(params, stream)
        if stream:
            return self._engine.stream(messages, params)  # type: ignore[no-any-return]
        return self._engine.complete(messages, params)  # type: ignore[no-any-return]

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> list[str]:
        """One answer per row of the ``prompt`` column (or the only column)."""
        column = PROMPT_COLUMN if PROMPT_COLUMN in model_input.columns else model_input.columns[0]
        replies = []
        for prompt in model_input[column]:
            reply = self.chat([{"role": "user", "content": str(prompt)}], dict(params or {}))
            replies.append(answer_text(reply))  # type: ignore[arg-type]
        return replies


mlflow.models.set_model(LlmModel())
