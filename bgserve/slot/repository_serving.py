"""Puts the model repository extension on a slot server: REST routes and the gRPC port.

Inference over gRPC goes through kserve's data plane, like REST inference: the request and
response messages are kserve's, which are wire-identical to the Open Inference
Protocol's (and so to Seldon Core 2's).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from bgserve.slot.repository import (
    BundleRepository,
    ModelNotFound,
    RepositoryError,
)
from bgserve.slot.repository_grpc import Infer, start_grpc
from bgserve.slot.repository_http import RepositoryPaths, repository_router

log = logging.getLogger("bgserve.slot")


def bundle_loader(model_class: type[Any]) -> Callable[[str, Path], Any]:
    """A loader making a ready ``model_class(name, path)`` (the slot's bundle model)."""

    def load(name: str, bundle: Path) -> Any:
        model = model_class(name, str(bundle))
        model.load()
        return model

    return load


class InferRefused(RepositoryError):
    """The model refused the inference request (bad inputs)."""


class InferFailed(RepositoryError):
    """The model is not ready, or raised while answering."""

    status = 500


def _background_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="oip-grpc-infer", daemon=True).start()
    return loop


def grpc_infer(dataplane: Any) -> Infer:
    """An :data:`Infer` answering through kserve's ``dataplane`` on an event loop of its
    own: the slot's REST loop is never touched, and one long-lived loop keeps its worker
    threads (a loop per call would start and join them every time)."""
    from google.protobuf.message import DecodeError
    from kserve.errors import InvalidInput, ModelNotReady
    from kserve.errors import ModelNotFound as UnknownModel
    from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest
    from kserve.protocol.infer_type import InferRequest, InferResponse

    loop = _background_loop()

    def infer(data: bytes, headers: dict[str, str]) -> bytes:
        try:
            request = ModelInferRequest.FromString(data)
        except DecodeError as exc:
            raise InferRefused(f"the request is not a ModelInferRequest: {exc}") from exc
        name = request.model_name
        try:
            call = dataplane.infer(
                model_name=name, request=InferRequest.from_grpc(request), headers=headers
            )
            body, _ = asyncio.run_coroutine_threadsafe(call, loop).result()
        except UnknownModel as exc:
            raise ModelNotFound(name) from exc
        except InvalidInput as exc:
            raise InferRefused(f"model {name}: {exc.reason}") from exc
        except ModelNotReady as exc:
            raise InferFailed(f"model {name} is not ready") from exc
        except Exception as exc:
            raise InferFailed(f"model {name}: {type(exc).__name__}: {exc}") from exc
        response = body.to_grpc() if isinstance(body, InferResponse) else body
        serialized: bytes = response.SerializeToString()
        return serialized

    return infer


def attach_repository(
    app: FastAPI,
    registry: Any,
    root: Path,
    model_class: type[Any],
    *,
    host: str,
    grpc_port: int | None,
    dataplane: Any = None,
) -> Callable[[], None]:
    """Serve ``root`` as a model repository on ``app`` (and on gRPC if ``grpc_port`` is set).

    With ``dataplane`` (kserve's), gRPC also answers ``ModelInfer``. Must run before
    kserve registers its own routes, so these answer first. ``root`` may
    not exist yet (Seldon's agent creates it). Returns a function that stops the gRPC
    server.
    """
    repository = BundleRepository(root, registry, bundle_loader(model_class))
    app.include_router(repository_router(repository))
    app.add_middleware(RepositoryPaths)
    if grpc_port is None:
        return lambda: None
    infer = grpc_infer(dataplane) if dataplane is not None else None
    server, bound = start_grpc(repository, host, grpc_port, infer)
    log.info("model repository %s: gRPC control plane on %s:%d", root, host, bound)
    return lambda: server.stop(grace=2).wait()
