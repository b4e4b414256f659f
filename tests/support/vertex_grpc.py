"""The gRPC side of the Vertex AI stand-in: an in-process server answering the methods the
GAPIC clients call with the SDK's own message types (proto-plus ``deserialize`` and
``serialize``, as the GAPIC transports use them), and long-running operations as
``google.longrunning.Operations`` answers them."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc

Handler = Callable[[Any, grpc.ServicerContext], Any]


class Refusal(Exception):
    """A request Vertex refuses: the gRPC status and Vertex's message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Operation:
    """One long-running operation: done once its work finished (or it was cancelled)."""

    name: str
    metadata: Any = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    response: Any = None  # a proto-plus or protobuf message once it succeeded
    error: tuple[grpc.StatusCode, str] | None = None

    def as_proto(self) -> Any:
        from google.longrunning import operations_pb2
        from google.protobuf import any_pb2
        from google.rpc import status_pb2

        found = operations_pb2.Operation(name=self.name, done=self.done)
        if self.metadata is not None:
            found.metadata.Pack(_pb(self.metadata))
        if self.done and self.error is not None:
            code, message = self.error
            found.error.CopyFrom(status_pb2.Status(code=code.value[0], message=message))
        elif self.done:
            packed = any_pb2.Any()
            packed.Pack(_pb(self.response))
            found.response.CopyFrom(packed)
        return found


def _pb(message: Any) -> Any:
    return type(message).pb(message) if hasattr(type(message), "pb") else message


class Operations:
    """The operations of the stand-in, run on threads (see :meth:`start`)."""

    def __init__(self, lock: threading.RLock, seconds: float) -> None:
        self.lock, self.seconds = lock, seconds
        self.found: dict[str, Operation] = {}
        self.serial = itertools.count(1000)
        self.updates = threading.Event()  # operations complete only while set
        self.updates.set()

    def start(
        self,
        parent: str,
        work: Callable[[threading.Event], str | None],
        done: Callable[[], Any],
        metadata: Any = None,
    ) -> Operation:
        """``work(cancelled)`` runs on a thread once ``seconds`` passed and updates are let
        through: None, or why the operation failed; then, under the lock, ``done()`` makes
        the change and gives the response. Cancelled operations fail with CANCELLED."""
        op = Operation(f"{parent}/operations/{next(self.serial)}", metadata)
        self.found[op.name] = op

        def run() -> None:
            time.sleep(self.seconds)
            self.updates.wait()
            try:
                error = work(op.cancelled)
            except Exception as exc:  # what runs the containers failed: the operation fails
                error = f"{type(exc).__name__}: {exc}"
            with self.lock:
                if op.cancelled.is_set():
                    op.error = (grpc.StatusCode.CANCELLED, "Operation was cancelled.")
                elif error is not None:
                    op.error = (grpc.StatusCode.FAILED_PRECONDITION, error)
                else:
                    op.response = done()
                op.done = True

        threading.Thread(target=run, daemon=True).start()
        return op

    def get(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.lock:
            op = self.found.get(request.name)
            if op is None:
                raise Refusal(grpc.StatusCode.NOT_FOUND, f"Operation {request.name} not found.")
            return op.as_proto()

    def cancel(self, request: Any, context: grpc.ServicerContext) -> Any:
        from google.protobuf import empty_pb2

        with self.lock:
            op = self.found.get(request.name)
            if op is None:
                raise Refusal(grpc.StatusCode.NOT_FOUND, f"Operation {request.name} not found.")
            if not op.done:
                op.cancelled.set()
        return empty_pb2.Empty()


def serve(
    services: dict[str, dict[str, tuple[Handler, Any, Any]]],
    guard: Callable[[str, grpc.ServicerContext], None],
) -> tuple[grpc.Server, str]:
    """A gRPC server on a loopback port answering ``services`` (service -> method ->
    (handler, request type, response type)); ``guard`` runs first for every call and may
    raise a Refusal (throttling). Returns the server and its ``host:port``."""
    handlers = []
    for service, methods in services.items():
        table = {
            method: grpc.unary_unary_rpc_method_handler(
                _answering(f"{service}/{method}", handler, guard),
                request_deserializer=_reader(request),
                response_serializer=_writer(response),
            )
            for method, (handler, request, response) in methods.items()
        }
        handlers.append(grpc.method_handlers_generic_handler(service, table))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers(handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def _reader(kind: Any) -> Callable[[bytes], Any]:
    """proto-plus types deserialize, protobuf ones parse FromString."""
    found: Callable[[bytes], Any] = getattr(kind, "deserialize", None) or kind.FromString
    return found


def _writer(kind: Any) -> Callable[[Any], bytes]:
    found: Callable[[Any], bytes] = getattr(kind, "serialize", None) or (
        lambda message: message.SerializeToString()
    )
    return found


def _answering(
    method: str, handler: Handler, guard: Callable[[str, grpc.ServicerContext], None]
) -> Handler:
    def answer(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            guard(method, context)
            return handler(request, context)
        except Refusal as refused:
            context.abort(refused.code, refused.message)

    return answer
