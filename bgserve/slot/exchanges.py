"""A slot's record of the exchanges it answered, so a gateway's mirror can be paired with
the live answer.

A Gateway API ``RequestMirror`` (or Istio's ``mirror``) sends green a copy of a live
request and discards green's answer: it never reaches bgserve through the gateway. Envoy
gives the live request and its copy the same ``x-request-id``. So each slot keeps a
bounded record of the exchanges it answered (request id, whether its host bore Envoy's
``-shadow`` mark of a copy, a digest of the whole request body, both bodies cut at
:data:`~bgserve.dataplane.wire.BODY_CAP`, status, time) and bgserve drains blue's and
green's records and pairs them by request id (:mod:`bgserve.backends.exchange_pairing`).

Recording costs memory and time, so a slot records only while someone drains it: from a
drain until :data:`RECORD_WINDOW` seconds after the last one. The drain route
(``POST`` :data:`DRAIN_PATH`) answers only a bearer token equal to the slot's
(``BGSERVE_SLOT_TOKEN``): the records are live user traffic. Requests without an
``x-request-id`` are not recorded. The record is bounded by count and bytes; the oldest
records go first, and the drain reports how many went unread.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

from bgserve.dataplane.openai_api import assembled
from bgserve.dataplane.wire import BODY_CAP
from bgserve.slot.infer_body import Asgi, Message, Receive, Scope, Send

DRAIN_PATH = "/bgserve/v1/exchanges/drain"
TOKEN_ENV = "BGSERVE_SLOT_TOKEN"
RECORD_WINDOW = 30.0
"""Seconds a slot keeps recording after the last drain."""
MIRROR_HOST_SUFFIX = "-shadow"
"""What Envoy appends to the host of a mirrored copy (Istio; Envoy Gateway turns it off)."""
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
DRAIN_LIMIT = 500
# A streamed answer is kept whole up to this, then assembled and cut to BODY_CAP.
_STREAM_CAP = 4 * BODY_CAP


@dataclass(frozen=True)
class Exchange:
    """One answered request as a slot saw it. Bodies are UTF-8 text (bad bytes replaced)
    cut at :data:`BODY_CAP`; ``digest`` is the SHA-256 of the whole request body, so two
    exchanges with one request id are paired only if their inputs were the same."""

    request_id: str
    mirrored: bool
    digest: str
    request_body: str
    answer_body: str
    status: int
    ms: float
    truncated: bool
    release_id: int

    def size(self) -> int:
        """Roughly the bytes it holds."""
        return len(self.request_body) + len(self.answer_body) + 128


class ExchangeLog:
    """The bounded record, safe from any thread: at most ``capacity`` exchanges and
    ``max_bytes`` of bodies; it records only within :data:`RECORD_WINDOW` of a drain."""

    def __init__(
        self,
        capacity: int,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or max_bytes < 1:
            raise ValueError(f"an exchange log holds at least 1 record and byte: {capacity}")
        self.capacity, self.max_bytes, self.clock = capacity, max_bytes, clock
        self._records: deque[Exchange] = deque()
        self._bytes = 0
        self._unread = 0
        self._drained_at: float | None = None
        self._lock = threading.Lock()

    def recording(self) -> bool:
        """Whether a drain came within the last :data:`RECORD_WINDOW` seconds."""
        drained = self._drained_at
        return drained is not None and self.clock() - drained < RECORD_WINDOW

    def add(self, exchange: Exchange) -> None:
        """Keep ``exchange``, pushing out the oldest records beyond the bounds."""
        with self._lock:
            self._records.append(exchange)
            self._bytes += exchange.size()
            while len(self._records) > self.capacity or self._bytes > self.max_bytes:
                self._bytes -= self._records.popleft().size()
                self._unread += 1

    def drain(self, limit: int = DRAIN_LIMIT) -> dict[str, object]:
        """Up to ``limit`` of the oldest records (removed), how many were pushed out unread
        since the previous drain, and whether more wait; (re)starts recording."""
        with self._lock:
            self._drained_at = self.clock()
            taken = [self._records.popleft() for _ in range(min(limit, len(self._records)))]
            self._bytes -= sum(e.size() for e in taken)
            unread, self._unread = self._unread, 0
            more = bool(self._records)
        return {"exchanges": [asdict(e) for e in taken], "unread": unread, "more": more}


class _Capture:
    """What one exchange sent and answered, as it passes through."""

    def __init__(self) -> None:
        self.request = bytearray()
        self.request_cut = False
        self.digest = hashlib.sha256()
        self.answer = bytearray()
        self.answer_cut = False
        self.status = 0
        self.done = False

    def took(self, message: Message) -> None:
        if message["type"] == "http.request":
            body = message.get("body", b"")
            self.digest.update(body)
            self.request_cut |= _append(self.request, body, BODY_CAP)

    def gave(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        elif message["type"] == "http.response.body":
            self.answer_cut |= _append(self.answer, message.get("body", b""), _STREAM_CAP)
            self.done = not message.get("more_body", False)


def _append(buffer: bytearray, data: bytes, cap: int) -> bool:
    """Append what fits under ``cap``; True when something was cut."""
    room = cap - len(buffer)
    buffer += data[: max(room, 0)]
    return len(data) > room


class ExchangeRecorder:
    """ASGI middleware: records the slot's POST exchanges that carry an ``x-request-id``
    while it is drained, and serves the drain route behind ``token``."""

    def __init__(self, app: Asgi, log: ExchangeLog, token: str, release_id: int) -> None:
        if not token:
            raise ValueError(f"recording exchanges needs a token ({TOKEN_ENV})")
        self.app, self.log, self.release_id = app, log, release_id
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["path"] == DRAIN_PATH:
            await self._drain(scope, send)
        elif scope["method"] == "POST" and self.log.recording():
            await self._record(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _record(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", ()))
        request_id = headers.get(b"x-request-id")
        if not request_id:
            await self.app(scope, receive, send)
            return
        capture, started = _Capture(), time.monotonic()

        async def taking() -> Message:
            message = await receive()
            capture.took(message)
            return message

        async def giving(message: Message) -> None:
            capture.gave(message)
            await send(message)

        await self.app(scope, taking, giving)
        if capture.done:
            host = headers.get(b"host", b"").decode("latin-1")
            self.log.add(self._exchange(request_id, host, capture, time.monotonic() - started))

    def _exchange(self, request_id: bytes, host: str, capture: _Capture, took: float) -> Exchange:
        answer = assembled(bytes(capture.answer))
        return Exchange(
            request_id=request_id.decode("latin-1")[:200],
            mirrored=host.split(":", 1)[0].endswith(MIRROR_HOST_SUFFIX),
            digest=capture.digest.hexdigest(),
            request_body=_text(capture.request),
            answer_body=_text(answer),
            status=capture.status,
            ms=took * 1000.0,
            truncated=capture.request_cut or capture.answer_cut or len(answer) > BODY_CAP,
            release_id=self.release_id,
        )

    async def _drain(self, scope: Scope, send: Send) -> None:
        if scope["method"] != "POST":
            await _answer(send, 405, {"error": f"drain with POST {DRAIN_PATH}"})
            return
        if not self._authorized(scope):
            message = f"drain needs 'Authorization: Bearer <token>', the slot's {TOKEN_ENV}"
            await _answer(send, 401, {"error": message})
            return
        await _answer(send, 200, self.log.drain())

    def _authorized(self, scope: Scope) -> bool:
        given = dict(scope.get("headers", ())).get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.token)


def _text(data: bytes | bytearray) -> str:
    return bytes(data[:BODY_CAP]).decode("utf-8", errors="replace")


async def _answer(send: Send, status: int, body: object) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
