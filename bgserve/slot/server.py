"""The slot process: one MLflow pyfunc bundle served over the Open Inference Protocol v2.

Run as ``python -m bgserve.slot.server --model-uri URI --deployment NAME
--release-id N --host 127.0.0.1 --port P`` (or with ``--socket-fd`` to serve on a
listening socket inherited from the parent). The model answers under the deployment's
name: ``POST /v2/models/{deployment}/infer`` takes one BYTES input per template
variable and returns one BYTES output named ``output``. With a release id, every answer
names it (``x-bgserve-release``: :mod:`bgserve.slot.release_header`). The process exits
cleanly on SIGTERM or SIGINT.

With ``--model-repository ROOT`` (and optionally ``--grpc-port``) the slot also serves the
Open Inference Protocol's model repository extension: bundles in folders under ``ROOT``
are loaded and unloaded by name (:mod:`bgserve.slot.repository`), which
is how Seldon Core 2's agent drives a server. ``--model-uri`` is then optional.

Once the model is loaded and the server built, everything alive is frozen out of the
garbage collector's reach (:func:`bgserve.gcpause.freeze_long_lived`): otherwise every
full collection walks the model's few hundred thousand objects while requests wait. The
slot's own ``GET /metrics`` reports the pauses that remain (``bgserve_gc_*``, with
``process="slot"``) and how many objects were frozen.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from bgserve import gcpause
from bgserve.slot.bundle_model import bundle_model_class
from bgserve.slot.exchanges import TOKEN_ENV
from bgserve.slot.infer_body import JsonInferBody

log = logging.getLogger("bgserve.slot")


def _import_kserve_quietly() -> None:
    # kserve parses sys.argv when first imported; keep our own flags away from it.
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve  # noqa: F401
    finally:
        sys.argv = saved


def _quiet_per_request_logs() -> None:
    # One log line per request costs more than the proxy hop it is measured against.
    for name in ("uvicorn.access", "kserve.trace"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = False
        logger.disabled = True


def _watch_gc(freeze: bool) -> None:
    """Freeze start-up's objects (unless told not to), then time every later collection
    for ``/metrics``."""
    from prometheus_client import REGISTRY

    from bgserve.gcmetrics import PauseCollector

    if freeze:
        tracker = gcpause.settle_after_start()
        log.info("froze %d start-up objects out of the collector's reach", gc.get_freeze_count())
    else:
        tracker = gcpause.install()
    REGISTRY.register(PauseCollector(lambda: {"slot": tracker.snapshot()}))


def _no_repository() -> None:
    """Nothing to stop: the slot serves no model repository."""


def _exit_on_signal(signum: int, frame: object) -> NoReturn:
    raise SystemExit(0)


def serve(
    model_uri: str | None,
    deployment: str,
    release_id: int,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    socket_fd: int | None = None,
    gc_freeze: bool = True,
    model_repository: Path | None = None,
    grpc_port: int | None = None,
    sagemaker: bool = False,
    exchange_records: int = 0,
    token: str = "",
) -> None:
    """Load ``model_uri`` and serve it as ``deployment`` until SIGTERM/SIGINT. Blocks.

    ``socket_fd`` is an already listening socket to serve on (``host``/``port`` are
    then ignored). ``gc_freeze=False`` leaves start-up's objects to the collector (only
    to measure what freezing them saves). ``model_repository`` serves the repository
    extension over that folder (REST, and gRPC on ``grpc_port`` when given); with it,
    ``model_uri`` may be None. ``sagemaker`` adds SageMaker's container contract
    (``/ping``, ``/invocations``: :mod:`bgserve.slot.sagemaker`). ``exchange_records``
    above 0 keeps that many answered exchanges while drained with ``token``
    (:mod:`bgserve.slot.exchanges`). Raises whatever loading the model raises.
    """
    signal.signal(signal.SIGTERM, _exit_on_signal)
    started = time.monotonic()
    _import_kserve_quietly()
    import kserve
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.server import RESTServer

    model = bundle_model_class()(deployment, model_uri) if model_uri is not None else None
    if model is not None:
        model.load()
    server = kserve.ModelServer(
        http_port=port, workers=1, enable_grpc=False, enable_latency_logging=False
    )
    if model is not None:
        server.register_model(model)
    rest = RESTServer(
        FASTAPI_APP_IMPORT_STRING,
        server.dataplane,
        server.model_repository_extension,
        port,
        workers=1,
        event_loop="uvloop",
    )
    rest.config.host = host  # kserve binds 0.0.0.0; a slot only answers the router
    # uvicorn loads this same app object by its import string.
    from kserve.model_server import app

    stop_repository: Callable[[], None] = _no_repository
    if model_repository is not None:
        from bgserve.slot.repository_serving import attach_repository

        stop_repository = attach_repository(
            app,
            server.dataplane.model_registry,
            model_repository,
            bundle_model_class(),
            host=host,
            grpc_port=grpc_port,
            dataplane=server.dataplane,
        )
    if model is not None and model.chat_bundle is not None:
        from bgserve.slot.openai_api import attach_openai

        attach_openai(app, model.chat_bundle, deployment)
    app.add_middleware(JsonInferBody, variables=lambda: model.variables if model else [])
    if release_id > 0:
        from bgserve.slot.release_header import ReleaseHeader

        app.add_middleware(ReleaseHeader, release_id=release_id)
    if sagemaker:
        from bgserve.slot.sagemaker import SageMakerContract

        chat = model is not None and model.chat_bundle is not None
        app.add_middleware(SageMakerContract, deployment=deployment, chat=chat)
    if exchange_records > 0:
        from bgserve.slot.exchanges import ExchangeLog, ExchangeRecorder

        records = ExchangeLog(exchange_records)
        app.add_middleware(ExchangeRecorder, log=records, token=token, release_id=release_id)
    _quiet_per_request_logs()
    _watch_gc(gc_freeze)
    sockets = [socket.socket(fileno=socket_fd)] if socket_fd is not None else None
    log.info(
        "slot %s release %s serving %s (loaded in %.2fs)",
        deployment,
        release_id,
        model_uri or f"the model repository {model_repository}",
        time.monotonic() - started,
    )
    try:
        rest.run(sockets=sockets)
    finally:
        stop_repository()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bgserve slot",
        description="Serve one release's bundle, or bundles by name from a folder, over OIP v2.",
    )
    parser.add_argument("--model-uri", help="models:/name/version or a path")
    parser.add_argument("--deployment", default="", help="name the model answers under")
    parser.add_argument("--release-id", default=0, type=int)
    parser.add_argument(
        "--model-repository", type=Path, help="serve the OIP model repository API over this folder"
    )
    parser.add_argument("--grpc-port", type=int, help="also serve the repository API over gRPC")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--socket-fd", type=int, default=None, help="inherited listening socket")
    parser.add_argument(
        "--sagemaker",
        action="store_true",
        help="also answer SageMaker's container contract: GET /ping, POST /invocations",
    )
    parser.add_argument(
        "--exchange-records",
        type=int,
        default=0,
        help="keep up to N answered exchanges while bgserve drains them, to pair a gateway's "
        "mirrored copies with live answers (needs the token in BGSERVE_SLOT_TOKEN)",
    )
    parser.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="leave the loaded model to the garbage collector (for benchmarks only)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The slot's command line, checked; exits with a usage message if it does not hold."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.model_uri is None and args.model_repository is None:
        parser.error("give --model-uri (one bundle) or --model-repository (bundles by name)")
    if args.model_uri is not None and not args.deployment:
        parser.error("--model-uri needs --deployment, the name the model answers under")
    if args.grpc_port is not None and args.model_repository is None:
        parser.error("--grpc-port serves the model repository API: give --model-repository")
    if args.exchange_records < 0:
        parser.error("--exchange-records must be 0 (off) or more")
    args.token = os.environ.get(TOKEN_ENV, "")
    if args.exchange_records and not args.token:
        parser.error(f"--exchange-records needs the drain token in {TOKEN_ENV}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (``bgserve slot`` calls this with its own arguments)."""
    from bgserve.llm.safety import UnsafeLlamaBuild

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        _serve(args)
    except UnsafeLlamaBuild as exc:
        log.error("slot %s refuses to start: %s", args.deployment, exc.message)
        raise SystemExit(3) from None


def _serve(args: argparse.Namespace) -> None:
    serve(
        args.model_uri,
        args.deployment,
        args.release_id,
        host=args.host,
        port=args.port,
        socket_fd=args.socket_fd,
        gc_freeze=args.gc_freeze,
        model_repository=args.model_repository,
        grpc_port=args.grpc_port,
        sagemaker=args.sagemaker,
        exchange_records=args.exchange_records,
        token=args.token,
    )


if __name__ == "__main__":
    main()
