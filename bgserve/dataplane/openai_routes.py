"""The router's OpenAI-compatible paths: a chat completion routed as an infer request is,
the model list, and their errors in OpenAI's shape.

``POST /openai/v1/chat/completions`` and ``POST /v1/chat/completions`` (KServe's and
OpenAI's paths) go to the slot's ``/openai/v1/chat/completions``: ``model`` in the JSON
body names the deployment, the OpenAI ``user`` field is the sticky key when the sticky
header is absent, and the answer, streamed or not, is relayed as it arrives and measured
on the way (:mod:`~bgserve.dataplane.stream_meter`); blue's answers are mirrored to green
as infer requests are. ``GET /openai/v1/models`` lists the deployments. Body parsing and
the error shape are :mod:`~bgserve.dataplane.openai_api`'s.
"""

from __future__ import annotations

import asyncio

from bgserve.dataplane.http1 import Request, json_response
from bgserve.dataplane.mirror import Forward, Mirror
from bgserve.dataplane.openai_api import (
    CHAT_PATHS,
    MODELS_PATHS,
    OpenAIError,
    chat_call,
    for_slot,
    models_response,
    openai_error_response,
    unknown_model,
)
from bgserve.dataplane.request_head import SlotPicker
from bgserve.dataplane.route_state import RouteState
from bgserve.dataplane.stream_meter import StreamMeter


def is_openai(path: bytes) -> bool:
    """Whether ``path`` is one of the OpenAI paths (whose errors are in OpenAI's shape)."""
    return path in CHAT_PATHS or path in MODELS_PATHS


def serves(path: bytes, request: Request) -> bool:
    """Whether :meth:`OpenAIRoutes.serve` answers this request (a model list is a GET;
    any other method there is an unknown route, as before the OpenAI paths)."""
    return path in CHAT_PATHS or (path in MODELS_PATHS and request.method == b"GET")


def unauthorized(path: bytes, message: str, keep: bool) -> bytes:
    """The 401 of a request without the data plane's token, in the path's error shape."""
    if is_openai(path):
        return OpenAIError(401, message, code="invalid_api_key").response(keep)
    return json_response(401, "Unauthorized", {"error": message}, keep)


class OpenAIRoutes:
    """Answers the OpenAI paths on the router's loop, with the router's route state, slot
    picker, forwarder and mirror."""

    def __init__(
        self, state: RouteState, picker: SlotPicker, forward: Forward, mirror: Mirror
    ) -> None:
        self._state = state
        self._picker = picker
        self._forward = forward
        self._mirror = mirror

    async def serve(self, request: Request, writer: asyncio.StreamWriter, path: bytes) -> bool:
        """Answer a request :func:`serves` accepts; return whether the connection stays
        open."""
        if path in CHAT_PATHS:
            return await self.chat(request, writer, path)
        names = [t.deployment for t in self._state.tables.values()]
        writer.write(models_response(names, request.keep_alive))
        return request.keep_alive

    async def chat(self, request: Request, writer: asyncio.StreamWriter, path: bytes) -> bool:
        """Route a chat completion (``path`` one of ``CHAT_PATHS``) as an infer request is
        routed; return whether the connection stays open."""
        try:
            model, stream, user = chat_call(request)
            table = self._state.tables.get(model)
            if table is None:
                self._state.unrouted[0] += 1
                raise unknown_model(model)
            picker = self._picker
            index = picker.pick(request, table, user if picker.sticky else None)
            if index is None:
                message = f"deployment {table.deployment!r} has no slot with traffic weight"
                if table.all_down:
                    message = f"every slot of {table.deployment!r} with traffic weight is down"
                raise OpenAIError(503, message)
        except OpenAIError as exc:
            writer.write(exc.response(request.keep_alive))
            return request.keep_alive
        upstream = for_slot(request, path)
        meter = StreamMeter(stream)
        shadows = self._mirror.active
        if shadows and table.targets[index].role == "blue":
            shadow = shadows.get(model)
            if shadow is not None and shadow.select():
                return await self._mirror.forward(
                    shadow,
                    self._forward,
                    upstream,
                    writer,
                    table,
                    index,
                    meter=meter,
                    errors=openai_error_response,
                )
        return await self._forward(
            upstream, writer, table, index, count=True, meter=meter, errors=openai_error_response
        )
