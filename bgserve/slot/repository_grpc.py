"""The model repository extension over gRPC, the way Seldon Core 2's agent calls it.

The agent drives its model server only over gRPC (``inference.GRPCInferenceService``):
``ServerLive`` until the server is up, ``RepositoryIndex`` to unload what a previous
agent left, then ``RepositoryModelLoad``/``RepositoryModelUnload`` per model. This
module serves those (plus ``ServerReady`` and ``ModelReady``) with the messages and field
numbers of the Open Inference Protocol's gRPC definition, built at import time, so no
generated code is needed. ``ModelInfer`` is served when the slot hands in an
:data:`Infer` function (raw request bytes in, raw response bytes out), which is how gRPC
clients reach a model through the agent's proxy.

Errors map as MLServer maps them: 404 to NOT_FOUND (which the agent tolerates on
unload), 400 to INVALID_ARGUMENT, anything else to the closest code.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from bgserve.slot.repository import BundleRepository, RepositoryError

SERVICE = "inference.GRPCInferenceService"
_PROTO = "bgserve/oip_repository.proto"
_STRING = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_BOOL = descriptor_pb2.FieldDescriptorProto.TYPE_BOOL
_MESSAGE = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    422: grpc.StatusCode.FAILED_PRECONDITION,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}

Infer = Callable[[bytes, dict[str, str]], bytes]
"""Answer a serialized ``ModelInferRequest`` (with the call's metadata) with a serialized
``ModelInferResponse``; raise :class:`RepositoryError` with an HTTP-like status to refuse."""

# message name -> fields (name, number, type, label, message type)
_MESSAGES: dict[str, list[tuple[str, int, int, int, str]]] = {
    "ServerLiveRequest": [],
    "ServerLiveResponse": [("live", 1, _BOOL, _OPTIONAL, "")],
    "ServerReadyRequest": [],
    "ServerReadyResponse": [("ready", 1, _BOOL, _OPTIONAL, "")],
    "ModelReadyRequest": [
        ("name", 1, _STRING, _OPTIONAL, ""),
        ("version", 2, _STRING, _OPTIONAL, ""),
    ],
    "ModelReadyResponse": [("ready", 1, _BOOL, _OPTIONAL, "")],
    "RepositoryIndexRequest": [
        ("repository_name", 1, _STRING, _OPTIONAL, ""),
        ("ready", 2, _BOOL, _OPTIONAL, ""),
    ],
    "ModelIndex": [
        ("name", 1, _STRING, _OPTIONAL, ""),
        ("version", 2, _STRING, _OPTIONAL, ""),
        ("state", 3, _STRING, _OPTIONAL, ""),
        ("reason", 4, _STRING, _OPTIONAL, ""),
    ],
    "RepositoryIndexResponse": [("models", 1, _MESSAGE, _REPEATED, ".inference.ModelIndex")],
    # field 3, the parameters map, is ignored (proto3 skips unknown fields)
    "RepositoryModelLoadRequest": [
        ("repository_name", 1, _STRING, _OPTIONAL, ""),
        ("model_name", 2, _STRING, _OPTIONAL, ""),
    ],
    "RepositoryModelLoadResponse": [],
    "RepositoryModelUnloadRequest": [
        ("repository_name", 1, _STRING, _OPTIONAL, ""),
        ("model_name", 2, _STRING, _OPTIONAL, ""),
    ],
    "RepositoryModelUnloadResponse": [],
}


def _build_messages() -> dict[str, Any]:
    proto = descriptor_pb2.FileDescriptorProto(name=_PROTO, package="inference", syntax="proto3")
    for name, fields in _MESSAGES.items():
        message = proto.message_type.add(name=name)
        for field, number, kind, label, type_name in fields:
            added = message.field.add(name=field, number=number, type=kind, label=label)
            if type_name:
                added.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"inference.{name}"))
        for name in _MESSAGES
    }


MESSAGES = _build_messages()
"""The message classes by name (``MESSAGES["RepositoryModelLoadRequest"]``, ...)."""


class RepositoryServicer:
    """The control-plane methods of ``inference.GRPCInferenceService`` over a repository."""

    def __init__(self, repository: BundleRepository, infer: Infer | None = None) -> None:
        self.repository = repository
        self.infer = infer

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:
        return MESSAGES["ServerLiveResponse"](live=True)

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        return MESSAGES["ServerReadyResponse"](ready=True)

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        return MESSAGES["ModelReadyResponse"](ready=self.repository.is_ready(request.name))

    def RepositoryIndex(self, request: Any, context: grpc.ServicerContext) -> Any:
        entries = self.repository.index(ready_only=request.ready)
        models = [MESSAGES["ModelIndex"](**e.as_json()) for e in entries]
        return MESSAGES["RepositoryIndexResponse"](models=models)

    def RepositoryModelLoad(self, request: Any, context: grpc.ServicerContext) -> Any:
        _run(context, lambda: self.repository.load(request.model_name))
        return MESSAGES["RepositoryModelLoadResponse"]()

    def RepositoryModelUnload(self, request: Any, context: grpc.ServicerContext) -> Any:
        _run(context, lambda: self.repository.unload(request.model_name))
        return MESSAGES["RepositoryModelUnloadResponse"]()

    def ModelInfer(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        infer = self.infer
        if infer is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this slot serves inference over REST")
            return b""  # abort raises; this only tells the type checker
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        try:
            return infer(request, metadata)
        except RepositoryError as exc:
            _abort(context, exc)
            return b""


def _run(context: grpc.ServicerContext, work: Callable[[], None]) -> None:
    try:
        work()
    except RepositoryError as exc:
        _abort(context, exc)


def _abort(context: grpc.ServicerContext, exc: RepositoryError) -> None:
    context.abort(_STATUS_CODES.get(exc.status, grpc.StatusCode.UNKNOWN), exc.message)


_REQUESTS = {
    "ServerLive": "ServerLiveRequest",
    "ServerReady": "ServerReadyRequest",
    "ModelReady": "ModelReadyRequest",
    "RepositoryIndex": "RepositoryIndexRequest",
    "RepositoryModelLoad": "RepositoryModelLoadRequest",
    "RepositoryModelUnload": "RepositoryModelUnloadRequest",
}


def _raw(data: bytes) -> bytes:
    return data


def start_grpc(
    repository: BundleRepository, host: str, port: int, infer: Infer | None = None
) -> tuple[grpc.Server, int]:
    """Serve the control plane for ``repository`` on ``host:port`` (0 picks a free port),
    and ``ModelInfer`` through ``infer`` when given.

    Returns the started server (stop it with ``server.stop(grace)``) and its port.
    """
    servicer = RepositoryServicer(repository, infer)
    handlers = {
        method: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method),
            request_deserializer=MESSAGES[request].FromString,
            response_serializer=lambda message: message.SerializeToString(),
        )
        for method, request in _REQUESTS.items()
    }
    handlers["ModelInfer"] = grpc.unary_unary_rpc_method_handler(
        servicer.ModelInfer, request_deserializer=_raw, response_serializer=_raw
    )
    # Loads take seconds; a few workers let the index and liveness answer meanwhile.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="oip-grpc"))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:  # older grpcio answers 0 instead of raising
        raise OSError(f"cannot listen for gRPC on {host}:{port}")
    server.start()
    return server, bound
