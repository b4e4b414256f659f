"""The slot's OpenAI routes, for a bundle whose base model is an LLM.

``POST /openai/v1/chat/completions`` (KServe's prefix) answers a chat
completion, or with ``stream: true`` server-sent events ``data: {chunk}`` ... ``data:
[DONE]`` (the last chunk before ``[DONE]`` carries ``usage`` when
``stream_options.include_usage`` is set). ``GET /openai/v1/models`` lists the one model,
named after the deployment. Answers and chunks are checked against the official
``openai`` SDK's types; errors are in OpenAI's shape (:mod:`bgserve.slot.openai_request`).

A GGUF model makes one generation at a time: its calls take turns in arrival order
(:class:`Turns`), and each answer says in ``x-bgserve-queue-ms`` how long it waited for its
turn, so the data plane can tell the model's own time to first token from the queue in
front of it.

kserve 0.21 ships OpenAI model classes (``kserve.protocol.rest.openai``) but they import
their types from vLLM, which a slot does not install; the SDK's types are used instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from bgserve.slot.openai_request import ChatCall, OpenAIRefusal, parse_chat, prepare_types

# Not /v1 as well: kserve's own v1 protocol answers GET /v1/models on the same app.
PREFIX = "/openai/v1"
# Milliseconds the call waited for the model before its generation began (read by the
# data plane's stream meter: bgserve.dataplane.stream_meter).
QUEUE_HEADER = "x-bgserve-queue-ms"
log = logging.getLogger("bgserve.slot.openai")


class Turns:
    """Chat calls taking turns on a model that makes one generation at a time, first come
    first served; free for any other model."""

    def __init__(self, one_at_a_time: bool) -> None:
        self._lock = asyncio.Lock() if one_at_a_time else None

    async def take(self) -> dict[str, str]:
        """Wait for the model; the answer's headers saying how long (none when calls do
        not take turns). The caller must :meth:`give_back` the turn, however it ends."""
        if self._lock is None:
            return {}
        started = time.perf_counter()
        await self._lock.acquire()
        return {QUEUE_HEADER: f"{(time.perf_counter() - started) * 1000:.3f}"}

    def give_back(self) -> None:
        """End the current turn (nothing to do when calls do not take turns)."""
        if self._lock is not None:
            self._lock.release()


def chat_bundle(pyfunc: Any) -> Any | None:
    """The bundle's python model when its base is an LLM, else None.

    A GGUF base is checked first (:func:`bgserve.llm.safety.ensure_llama_works`).

    Raises:
        UnsafeLlamaBuild: the installed llama.cpp crashes on this machine.
    """
    from mlflow.exceptions import MlflowException

    try:
        bundle = pyfunc.unwrap_python_model()
    except MlflowException:
        return None
    llm = getattr(bundle, "llm", None)
    if llm is None or not callable(getattr(bundle, "chat", None)):
        return None
    gguf = getattr(llm, "gguf_path", None)
    if gguf:
        from bgserve.llm.safety import ensure_llama_works

        ensure_llama_works(Path(gguf))
    return bundle


def refusal_of(exc: Exception) -> OpenAIRefusal:
    """An exception met while answering, as an OpenAI-shaped refusal."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, OpenAIRefusal):
        return exc
    if isinstance(exc, MlflowException) and exc.error_code == "INVALID_PARAMETER_VALUE":
        param = "variables" if "variable" in exc.message else None
        return OpenAIRefusal(400, exc.message, param=param)
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and 400 <= status < 600:
        return OpenAIRefusal(status, str(exc), param=getattr(exc, "param", None))
    log.exception("chat completion failed")
    return OpenAIRefusal(500, f"the model failed: {type(exc).__name__}: {exc}")


def _error(refusal: OpenAIRefusal, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(refusal.payload(), status_code=refusal.status, headers=headers)


def completion_json(result: dict[str, Any], deployment: str) -> dict[str, Any]:
    """A chat.completion dict under the deployment's name, checked by the SDK's type."""
    from openai.types.chat import ChatCompletion

    checked = ChatCompletion.model_validate({**result, "model": deployment})
    return checked.model_dump(mode="json", exclude_unset=True)


def chunk_event(chunk: dict[str, Any], deployment: str) -> bytes:
    """One SSE event for a chat.completion.chunk dict, checked by the SDK's type."""
    from openai.types.chat import ChatCompletionChunk

    checked = ChatCompletionChunk.model_validate({**chunk, "model": deployment})
    data = json.dumps(checked.model_dump(mode="json", exclude_unset=True), separators=(",", ":"))
    return b"data: " + data.encode() + b"\n\n"


def _without_usage(chunk: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in chunk.items() if key != "usage"}


class _ChatStream:
    """One streamed generation, its chunks pulled on a thread of its own.

    The generation holds the model between its chunks. Closing it frees the model, and
    must not wait for the garbage collector: a client that leaves mid-stream leaves its
    response's body suspended (Starlette does not close it), and a slot's collector is
    mostly frozen. :meth:`close` is queued on the same thread, so it runs right after the
    chunk being made, if any (a generator cannot be closed while it runs).
    """

    def __init__(self, chunks: Iterator[dict[str, Any]]) -> None:
        self._chunks = chunks
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bgserve-chat")
        self._closed = False

    async def next(self) -> dict[str, Any] | None:
        """The next chunk, None at the end."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, next, self._chunks, None)

    def close(self) -> None:
        """End the generation after its current chunk and free the model (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._thread.submit(_close_generation, self._chunks)
        self._thread.shutdown(wait=False)


def _close_generation(chunks: Iterator[dict[str, Any]]) -> None:
    close = getattr(chunks, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:
        log.exception("closing a streamed generation failed")


class _ClosingStream(StreamingResponse):
    """A streamed response that ends its generation however the response ends (sent
    whole, failed, or left by the client), then calls ``on_end``."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        stream: _ChatStream,
        headers: dict[str, str],
        on_end: Callable[[], None],
    ) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", **headers},
        )
        self._stream = stream
        self._on_end = on_end

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stream.close()
            self._on_end()


async def _events(
    first: dict[str, Any] | None, stream: _ChatStream, call: ChatCall, name: str
) -> AsyncIterator[bytes]:
    chunk = first
    try:
        while chunk is not None:
            if chunk.get("choices") or (call.include_usage and chunk.get("usage")):
                shown = chunk if call.include_usage else _without_usage(chunk)
                yield chunk_event(shown, name)
            chunk = await stream.next()
        yield b"data: [DONE]\n\n"
    except Exception as exc:  # the status line is gone: the error becomes the last event
        yield b"data: " + json.dumps(refusal_of(exc).payload()).encode() + b"\n\n"


async def _stream(
    bundle: Any, call: ChatCall, name: str, headers: dict[str, str], turns: Turns
) -> Response:
    """The streamed answer, which gives the turn back when it ends; an error answer
    (the caller gives the turn back)."""
    try:
        chunks = await asyncio.to_thread(
            bundle.chat, call.variables, call.messages, call.params, True
        )
    except Exception as exc:
        return _error(refusal_of(exc), headers)
    stream = _ChatStream(chunks)
    try:
        first = await stream.next()  # a refusal before the first chunk keeps its status
    except Exception as exc:
        stream.close()
        return _error(refusal_of(exc), headers)
    except BaseException:
        stream.close()  # cancelled (the client left before the first chunk): free the model
        raise
    return _ClosingStream(_events(first, stream, call, name), stream, headers, turns.give_back)


def openai_router(bundle: Any, deployment: str) -> APIRouter:
    """The OpenAI routes answering for ``bundle`` under the name ``deployment``."""
    router = APIRouter(tags=["OpenAI"])
    created = int(time.time())
    turns = Turns(one_at_a_time=bool(getattr(getattr(bundle, "llm", None), "gguf_path", None)))

    async def chat_completions(request: Request) -> Response:
        try:
            call = parse_chat(await request.body(), deployment)
        except OpenAIRefusal as refusal:
            return _error(refusal)
        headers = await turns.take()
        handed_over = False
        try:
            if call.stream:
                response = await _stream(bundle, call, deployment, headers, turns)
                handed_over = isinstance(response, _ClosingStream)
                return response
            result = await asyncio.to_thread(
                bundle.chat, call.variables, call.messages, call.params, False
            )
            return JSONResponse(completion_json(result, deployment), headers=headers)
        except Exception as exc:
            return _error(refusal_of(exc), headers)
        finally:
            if not handed_over:
                turns.give_back()

    async def models() -> dict[str, Any]:
        from openai.types import Model

        model = Model(id=deployment, created=created, object="model", owned_by="bgserve")
        return {"object": "list", "data": [model.model_dump(mode="json", exclude_none=True)]}

    router.add_api_route(f"{PREFIX}/chat/completions", chat_completions, methods=["POST"])
    router.add_api_route(f"{PREFIX}/models", models, methods=["GET"])
    return router


def attach_openai(app: FastAPI, bundle: Any, deployment: str) -> None:
    """Serve the OpenAI routes for ``bundle`` on ``app`` (before it starts), their request
    and answer types ready."""
    prepare_types()
    app.include_router(openai_router(bundle, deployment))
