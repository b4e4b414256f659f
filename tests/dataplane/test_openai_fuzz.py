"""A seeded byte fuzzer on the data plane's OpenAI routes, through the real data-plane process.

Each case is a valid request (``POST /openai/v1/chat/completions``, ``POST
/v1/chat/completions`` or ``GET /openai/v1/models``) with one or more mutations: of the JSON
body (truncated, wrong types for ``model``/``messages``/``stream``/``user``/``variables``/
``stream_options``, huge, negative and non-finite numbers, deep nesting, NUL bytes, unicode,
duplicated keys, flipped bytes), of the headers (content-length mismatches and duplicates,
bad chunk sizes, odd transfer-encodings, ``x-bgserve-key`` oddities) and of the request line.
It goes out on a raw socket; the answer must be one well-formed HTTP/1.1 response (h11 as the
client) with a status below 500, since the upstream here never fails; a connection left open
must answer a valid chat completion correctly next. After the run the data plane must still
stream a chat completion, and its open files and memory must not have grown with the cases.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

import h11
import httpx
import psutil
import pytest

from bgserve.backends.local.dataplane_client import DataPlaneClient
from bgserve.backends.local.slot_launcher import SlotLauncher
from bgserve.dataplane.wire import RouteTarget
from tests.support.json_handler import JsonHandler

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 20240611
CASES = 1200
WARMUP_CASES = 300  # before the fd and memory baseline: pools and caches fill up first
READ_TIMEOUT_S = 10.0
MAX_RSS_GROWTH = 24 * 1024 * 1024
MAX_FD_GROWTH = 8
ANSWER = "fuzz-answer"
CHAT_PATHS = [b"/openai/v1/chat/completions", b"/v1/chat/completions"]
MESSAGES = [{"role": "user", "content": "hello"}]
# The framing refusals RFC 9112 names and nginx sends too (tests/dataplane/test_http_framing.py):
# an unknown transfer coding (501) and an HTTP version other than 1.0 and 1.1 (505).
PROTOCOL_REFUSALS = {501, 505}


class Upstream(JsonHandler):
    """A slot that answers every chat completion it can read, streamed when asked: it never
    fails, so any 5xx the fuzzer sees comes from the data plane."""

    protocol_version = "HTTP/1.1"
    seen = 0

    def do_GET(self) -> None:
        self.send_json(200, {"ready": True})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).seen += 1
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            body = None
        if isinstance(body, dict) and body.get("stream") is True:
            self._stream()
        else:
            message = {"role": "assistant", "content": ANSWER}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            self.send_json(200, {"object": "chat.completion", "choices": [choice]})

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for word in (ANSWER[:4], ANSWER[4:]):
            delta = {"choices": [{"index": 0, "delta": {"content": word}}]}
            self._chunk(b"data: " + json.dumps(delta).encode() + b"\n\n")
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory, upstream: int) -> Iterator[DataPlaneClient]:
    launcher = SlotLauncher(
        env={},
        python=sys.executable,
        log_dir=tmp_path_factory.mktemp("fuzz-plane"),
        ready_timeout=30,
        stop_grace=5,
    )
    options: dict[str, object] = {"connect_timeout": 1.0, "first_byte_timeout": 5.0}
    plane = launcher.start_plane("127.0.0.1", 0, options, lambda *_: None)
    try:
        plane.set_routes(
            "chat",
            [
                RouteTarget("blue", 1, "127.0.0.1", upstream, 50),
                RouteTarget("green", 2, "127.0.0.1", upstream, 50),
            ],
        )
        yield plane
    finally:
        plane.stop()
        launcher.close()


# ----- the cases -----


@dataclass
class Case:
    """The bytes of one request and what may happen to them."""

    data: bytes
    what: list[str]
    framed: bool = True  # a complete request: it gets an answer, and the connection may stay
    method: bytes = b"POST"

    @classmethod
    def of(
        cls,
        body: bytes,
        *,
        path: bytes = CHAT_PATHS[0],
        method: bytes = b"POST",
        headers: list[bytes] | None = None,
        what: list[str] | None = None,
    ) -> Case:
        lines = [b"%s %s HTTP/1.1" % (method, path), b"Host: 127.0.0.1"]
        lines += headers if headers is not None else [b"Content-Type: application/json"]
        lines.append(b"Content-Length: %d" % len(body))
        return cls(b"\r\n".join(lines) + b"\r\n\r\n" + body, what or [], method=method)


def valid_body(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "chat", "messages": list(MESSAGES)}
    if rng.random() < 0.5:
        body["stream"] = True
        if rng.random() < 0.5:
            body["stream_options"] = {"include_usage": True}
    if rng.random() < 0.3:
        body["user"] = f"user-{rng.randrange(100)}"
    if rng.random() < 0.3:
        body["variables"] = {"text": "some text"}
    if rng.random() < 0.3:
        body["max_tokens"] = rng.randrange(1, 64)
    return body


def odd_value(rng: random.Random) -> Any:
    """A JSON value of any type, often a hostile one."""
    choices: list[Callable[[], Any]] = [
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.choice([0, -1, 2**63, -(2**64), 10**400, 1.5, -0.0, 1e308]),
        lambda: rng.choice(["", "chat", "chat\x00", "CHAT", "chät", "\ud83d\ude00", "x" * 70_000]),
        lambda: [odd_value(rng) for _ in range(rng.randrange(3))],
        lambda: {"role": odd_value(rng), "content": odd_value(rng)},
        lambda: "true",
    ]
    return rng.choice(choices)()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


RAW_BODIES = [
    b'{"model": "chat", "model": 1, "messages": []}',
    b'{"model": 1, "model": "chat", "messages": []}',
    b'{"model": "chat", "stream": true, "stream": "yes"}',
    b'{"model": "chat", "max_tokens": NaN}',
    b'{"model": "chat", "temperature": Infinity, "top_p": -Infinity}',
    b'{"model": "chat", "max_tokens": 1e999999}',
    b'{"model": "chat", "max_tokens": -99999999999999999999999999999999}',
    b'{"model": "ch\\u0000at"}',
    b'{"model": "\\ud800"}',
    b'{"model": "chat", "user": "\\udfff"}',
    b'{"model": "chat\xff\xfe"}',
    b'{"model": "chat"\x00}',
    b"\xef\xbb\xbf" + b'{"model": "chat"}',
    b'{"model": "chat", "messages": ' + nested(100_000).encode() + b"}",
    b'{"model": "chat", "variables": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}",
    nested(50_000).encode(),
    b"[]",
    b"null",
    b'"chat"',
    b"1e400",
    b"",
    b"{",
    b"\x00" * 64,
]


def body_case(rng: random.Random) -> Case:
    """A chat completion whose JSON body is mutated; the framing stays right."""
    body = valid_body(rng)
    kind = rng.randrange(6)
    if kind == 0:
        key = rng.choice(["model", "messages", "stream", "user", "variables", "stream_options"])
        body[key] = odd_value(rng)
        what = [f"{key}={str(body[key])[:40]!r}"]
    elif kind == 1:
        body[rng.choice(["max_tokens", "temperature", "n", "seed", "top_p"])] = rng.choice(
            [-1, 2**64, 1e308, -1e308, 10**30, 0.0]
        )
        what = ["number"]
    elif kind == 2:
        raw = rng.choice(RAW_BODIES)
        return Case.of(raw, path=rng.choice(CHAT_PATHS), what=[f"raw {raw[:40]!r}"])
    elif kind == 3:
        data = json.dumps(body).encode()
        return Case.of(data[: rng.randrange(len(data))], what=["truncated"])
    elif kind == 4:
        flipped = bytearray(json.dumps(body, ensure_ascii=rng.random() < 0.5).encode())
        for _ in range(rng.randrange(1, 6)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        return Case.of(bytes(flipped), path=rng.choice(CHAT_PATHS), what=["flipped bytes"])
    else:
        body[f"extra{rng.randrange(9)}"] = odd_value(rng)
        what = ["extra field"]
    data = json.dumps(body, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    return Case.of(data, path=rng.choice(CHAT_PATHS), what=what)


KEY_HEADERS = [
    b"x-bgserve-key: ",
    b"x-bgserve-key: " + b"k" * 9000,
    b"x-bgserve-key: \xff\xfe\x80",
    b"x-bgserve-key: a\x00b",
    b"x-bgserve-key: one\r\nx-bgserve-key: two",
    b"X-BGSERVE-KEY:    spaced    ",
    b"x-bgserve-key : space-before-colon",
    b"x-bgserve-key:\tnot\tfolded\r\n folded",
    b"x-bgserve-key",
]
TRANSFER_ENCODINGS = [
    b"chunked, chunked",
    b"gzip, chunked",
    b"chunked, gzip",
    b"Chunked",
    b"identity",
    b" chunked",
    b"chunked\x0b",
    b"",
]


def header_case(rng: random.Random) -> Case:
    """A valid chat body under odd or contradicting framing headers."""
    body = json.dumps(valid_body(rng)).encode()
    head = b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" % (
        rng.choice(CHAT_PATHS)
    )
    kind = rng.randrange(7)
    if kind == 0:  # a key header oddity, framing right
        key = rng.choice(KEY_HEADERS)
        return Case.of(body, headers=[b"Content-Type: application/json", key], what=[repr(key)])
    if kind == 1:  # declared shorter than sent: the rest is read as the next request
        short = rng.randrange(len(body))
        data = head + b"Content-Length: %d\r\n\r\n" % short + body
        return Case(data, ["content-length short"], framed=False)
    if kind == 2:  # declared longer than sent: the client then stops sending
        data = head + b"Content-Length: %d\r\n\r\n" % (len(body) + rng.randrange(1, 9999)) + body
        return Case(data, ["content-length long"], framed=False)
    if kind == 3:
        lengths = rng.choice([(len(body), len(body)), (len(body), 3), (3, len(body))])
        fields = b"".join(b"Content-Length: %d\r\n" % n for n in lengths)
        fields = rng.choice([fields, b"Content-Length: %d, %d\r\n" % lengths])
        return Case(head + fields + b"\r\n" + body, ["two content-lengths"], framed=False)
    if kind == 4:  # chunked, with sizes right or wrong
        size = rng.choice(
            [b"%x" % len(body), b"%X;ext=1" % len(body), b"-1", b"zz", b"ffffffffffffffffff", b""]
        )
        end = rng.choice([b"0\r\n\r\n", b"0\r\nTrailer: x\r\n\r\n", b"", b"1\r\n"])
        data = head + b"Transfer-Encoding: chunked\r\n\r\n" + size + b"\r\n" + body + b"\r\n" + end
        good = size.startswith(b"%x" % len(body)) and end.startswith(b"0")
        return Case(data, [f"chunked size {size!r} end {end!r}"], framed=good)
    if kind == 5:
        encoding = rng.choice(TRANSFER_ENCODINGS)
        cl = rng.choice([b"", b"Content-Length: %d\r\n" % len(body)])
        data = head + b"Transfer-Encoding: " + encoding + b"\r\n" + cl + b"\r\n" + body
        return Case(data, [f"transfer-encoding {encoding!r} cl {bool(cl)}"], framed=False)
    cl = rng.choice([b"-1", b"+5", b"0x10", b"1e3", b" ", b"99999999999999999999999"])
    data = head + b"Content-Length: " + cl + b"\r\n\r\n" + body
    return Case(data, [f"content-length {cl!r}"], framed=False)


METHODS = [b"GET", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"post", b"P\x00ST", b"POST "]
TARGETS = [
    b"/openai/v1/models",
    b"/v1/models",
    b"/openai/v1/chat/completions?x=1",
    b"/openai/v1/chat/completions/",
    b"/openai/v1//chat/completions",
    b"/openai/v1/chat/completions#frag",
    b"/OPENAI/v1/chat/completions",
    b"/openai/v1/chat/%63ompletions",
    b"http://127.0.0.1/openai/v1/chat/completions",
    b"*",
    b"/openai/v1/chat/completions" + b"a" * 20_000,
    b"/v1/chat/completions\x00",
]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"http/1.1", b""]


def line_case(rng: random.Random) -> Case:
    """A valid body under an odd method, target or version (or the model list)."""
    body = json.dumps(valid_body(rng)).encode()
    method = rng.choice([b"POST", *METHODS])
    target = rng.choice([*CHAT_PATHS, *TARGETS])
    version = rng.choice([b"HTTP/1.1", *VERSIONS])
    line = method + b" " + target + (b" " + version if version else b"")
    fields = b"Host: 127.0.0.1\r\nContent-Length: %d\r\n" % len(body)
    if rng.random() < 0.2:
        fields = b"Content-Length: %d\r\n" % len(body)  # no Host
    framed = method == b"POST" and version == b"HTTP/1.1"
    return Case(line + b"\r\n" + fields + b"\r\n" + body, [repr(line[:80])], framed, method)


def make_case(rng: random.Random) -> Case:
    roll = rng.random()
    if roll < 0.08:
        if rng.random() < 0.5:
            return Case(b"GET /openai/v1/models HTTP/1.1\r\nHost: x\r\n\r\n", ["models"])
        return Case.of(json.dumps(valid_body(rng)).encode(), path=rng.choice(CHAT_PATHS))
    if roll < 0.55:
        return body_case(rng)
    if roll < 0.85:
        return header_case(rng)
    return line_case(rng)


# ----- the exchange -----


@dataclass
class Answer:
    status: int | None  # None: the connection closed before any response
    headers: dict[bytes, bytes]
    body: bytes
    keep: bool  # the connection may carry another request


def read_answer(sock: socket.socket, method: bytes) -> Answer:
    """One response from ``sock``, parsed by h11; fails on anything malformed."""
    conn = h11.Connection(h11.CLIENT)
    h11_method = b"HEAD" if method == b"HEAD" else b"GET"
    conn.send(h11.Request(method=h11_method, target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    status: int | None = None
    headers: dict[bytes, bytes] = {}
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
        elif isinstance(event, h11.InformationalResponse):
            continue
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.lower(): v for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return Answer(status, headers, bytes(body), conn.their_state is h11.DONE)
        elif isinstance(event, h11.ConnectionClosed):
            assert status is None, "the connection closed in the middle of a response"
            return Answer(None, {}, b"", False)


def valid_request() -> bytes:
    return Case.of(json.dumps({"model": "chat", "messages": MESSAGES}).encode()).data


def closes(sock: socket.socket) -> bool:
    """Whether the peer closes ``sock`` (reading nothing else) within the read timeout."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def run_case(port: int, case: Case) -> int | None:
    """Send ``case``; check the answer and the connection; the status (None: closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S) as sock:
        # Refused before all of it was read: the answer is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(case.data)
            if not case.framed:
                sock.shutdown(socket.SHUT_WR)
        try:
            answer = read_answer(sock, case.method)
        except ConnectionResetError:
            return None
        status = answer.status
        if status is None:
            assert not case.framed, "a complete request was closed without an answer"
            return None
        assert status < 500 or status in PROTOCOL_REFUSALS, f"{status}: {answer.body[:300]!r}"
        if answer.keep and case.framed:
            sock.sendall(valid_request())
            follow = read_answer(sock, b"POST")
            assert follow.status == 200, f"next request: {follow.status} {follow.body[:200]!r}"
            assert json.loads(follow.body)["choices"][0]["message"]["content"] == ANSWER
        elif not answer.keep:
            assert closes(sock), "the connection stayed open after a final answer"
        return status


def stream_chat(port: int) -> str:
    body = {"model": "chat", "messages": MESSAGES, "stream": True}
    url = f"http://127.0.0.1:{port}/openai/v1/chat/completions"
    with httpx.Client(timeout=10) as http, http.stream("POST", url, json=body) as answer:
        assert answer.status_code == 200 and answer.headers["x-bgserve-slot"] in {"blue", "green"}
        lines = [line[6:] for line in answer.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return "".join(json.loads(e)["choices"][0]["delta"]["content"] for e in lines[:-1])


def footprint(pid: int) -> tuple[int, int]:
    process = psutil.Process(pid)
    return process.num_fds(), process.memory_info().rss


def test_fuzzed_openai_requests_get_a_well_formed_4xx_and_the_plane_survives(
    plane: DataPlaneClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert plane.port is not None and plane.pid is not None
    pid = plane.pid
    rng = random.Random(SEED)
    statuses: Counter[int | None] = Counter()
    failures: list[str] = []
    baseline = (0, 0)
    for index in range(CASES):
        if index == WARMUP_CASES:
            baseline = footprint(pid)
        case = make_case(rng)
        try:
            statuses[run_case(plane.port, case)] += 1
        except (AssertionError, h11.RemoteProtocolError, TimeoutError, OSError) as exc:
            failures.append(f"case {index} {case.what}: {type(exc).__name__} {exc}")
            failures.append(f"    {case.data[:300]!r}")
    fds, rss = footprint(pid)
    with capsys.disabled():
        print(
            f"\nOpenAI byte fuzz: {CASES} cases (seed {SEED}), {len(failures) // 2} failures, "
            f"statuses {sorted(statuses.items(), key=str)}; fds {baseline[0]} -> {fds}, "
            f"rss {baseline[1] >> 20} -> {rss >> 20} MiB"
        )
    assert not failures, "\n".join(failures[:40])
    assert plane.pid == pid, "the data plane restarted"
    assert stream_chat(plane.port) == ANSWER
    assert fds <= baseline[0] + MAX_FD_GROWTH
    assert rss <= baseline[1] + MAX_RSS_GROWTH


# ----- bugs the fuzzer found in chat_call (bgserve/dataplane/openai_api.py), now 400s -----


def send_chat(port: int, body: bytes) -> Answer:
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S) as sock:
        sock.sendall(Case.of(body).data)
        return read_answer(sock, b"POST")


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "\\ud800"}',
        b'{"model": "chat", "user": "\\udfff", "messages": []}',
        b'{"model": "\xed\xa0\x80"}',  # the same surrogate as UTF-8 bytes: json reads it
    ],
)
def test_a_lone_surrogate_in_model_or_user_is_a_400(plane: DataPlaneClient, body: bytes) -> None:
    assert plane.port is not None
    answer = send_chat(plane.port, body)
    assert answer.status == 400, answer
    assert stream_chat(plane.port) == ANSWER


@pytest.mark.parametrize(
    "body", [b"[" * 100_000 + b"]" * 100_000, b'{"model": "chat", "messages": ' + b"[" * 50_000]
)
def test_a_body_nested_too_deep_is_a_400(plane: DataPlaneClient, body: bytes) -> None:
    assert plane.port is not None
    answer = send_chat(plane.port, body)
    assert answer.status == 400, answer
    assert stream_chat(plane.port) == ANSWER
