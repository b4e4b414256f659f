"""The plain-request reader against llhttp: whatever it takes, llhttp takes the same way.

:func:`bgserve.dataplane.http1_simple.read_plain` reads common requests without llhttp.
It must accept only what llhttp's path accepts and make exactly the request llhttp's path
makes; everything else it leaves to llhttp. Each generated request is read twice, by a
reader that tries the plain path first and by one that never does, and the results
compared.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bgserve.dataplane.http1 as http1
from bgserve.dataplane.http1 import BadRequest, Request, RequestReader
from bgserve.dataplane.http1_simple import read_plain

MAX_BODY = 1024


class _Writer:
    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 8080)


def _read(data: bytes, *, plain: bool, monkeypatch: pytest.MonkeyPatch) -> object:
    """What one fresh reader makes of ``data``: its requests, then its refusal if any."""
    with monkeypatch.context() as patch:
        if not plain:
            patch.setattr(http1, "read_plain", lambda data, max_body: None)
        reader = RequestReader(MAX_BODY)
        reader.feed(data, _Writer())  # type: ignore[arg-type]
        seen: list[object] = []
        while True:
            try:
                request = reader.next_request()
            except BadRequest as exc:
                seen.append((exc.status, exc.message))
                break
            if request is None:
                break
            seen.append(request)
        seen.append(reader.in_message)
        return seen


_NAMES = st.sampled_from(
    [
        b"host",
        b"Host",
        b"HOST",
        b"content-type",
        b"Content-Length",
        b"content-length",
        b"connection",
        b"Connection",
        b"transfer-encoding",
        b"expect",
        b"upgrade",
        b"te",
        b"keep-alive",
        b"x-bgserve-key",
        b"authorization",
        b"x-a",
        b"bad name",
        b"x\x00y",
        b"",
    ]
)
_VALUES = st.sampled_from(
    [
        b"127.0.0.1:8080",
        b"application/json",
        b"keep-alive",
        b"Keep-Alive",
        b"close",
        b"upgrade",
        b"chunked",
        b"100-continue",
        b"5",
        b"05",
        b"-1",
        b"1e3",
        b"",
        b" padded ",
        b"a\tb",
        b"tab\t",
        b"caf\xc3\xa9",
        b"ctl\x01",
        b"Bearer t0ken",
    ]
)
_SEPARATORS = st.sampled_from([b": ", b":", b":  ", b" : ", b":\t"])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """Mostly plain requests (a Host, the exact length), each trait varied now and then."""
    often = st.sampled_from
    method = draw(
        often([b"POST", b"GET", b"PUT", b"HEAD", b"PATCH"] * 3 + [b"CONNECT", b"BREW", b"get"])
    )
    target = draw(
        often(
            [
                *[b"/openai/v1/chat/completions", b"/v2/models/m/infer", b"/a?b=c&d=%20"] * 3,
                b"*",
                b"http://x/y",
                b"/sp ace",
                b"/caf\xc3\xa9",
                b"/",
            ]
        )
    )
    version = draw(often([b"HTTP/1.1"] * 4 + [b"HTTP/1.0", b"HTTP/2.0"]))
    hosts = draw(often([[b"host: a:1"]] * 4 + [[], [b"Host: a", b"HOST: b"], [b"host:b"]]))
    connection = draw(often([[], [], [b"Connection: keep-alive"], [b"connection: Keep-Alive"]]))
    usual = draw(often([[], [b"content-type: application/json"], [b"Accept: */*", b"X-A: b c"]]))
    headers = draw(st.lists(st.tuples(_NAMES, _SEPARATORS, _VALUES), max_size=2))
    body = draw(st.binary(max_size=12))
    length = draw(often(["exact"] * 4 + [None, "short", "long", "twice"]))
    lines = [b"%s %s %s" % (method, target, version), *hosts, *connection, *usual]
    lines += [name + sep + value for name, sep, value in headers]
    if length is not None:
        size = {"exact": len(body), "short": max(len(body) - 1, 0), "long": len(body) + 3}
        lines.append(b"content-length: %d" % size.get(length, len(body)))
        if length == "twice":
            lines.append(b"Content-Length: %d" % len(body))
    order = draw(st.permutations(lines[1:]))
    return b"\r\n".join([lines[0], *order]) + b"\r\n\r\n" + body


# Derandomized: the same requests on every run, so that a failure is always reproduced.
EXAMPLES = settings(
    max_examples=3000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@EXAMPLES
@given(data=requests())
def test_the_plain_reader_takes_only_what_llhttp_takes_the_same_way(data: bytes) -> None:
    monkeypatch = pytest.MonkeyPatch()
    if read_plain(data, MAX_BODY) is None:
        return
    assert _read(data, plain=True, monkeypatch=monkeypatch) == _read(
        data, plain=False, monkeypatch=monkeypatch
    )


def test_the_generated_requests_are_often_plain() -> None:
    """The comparison above runs on many plain requests, not on a handful."""
    plain: list[bytes] = []

    @EXAMPLES
    @given(data=requests())
    def count(data: bytes) -> None:
        if read_plain(data, MAX_BODY) is not None:
            plain.append(data)

    count()
    assert len(plain) >= 250, len(plain)


def test_common_requests_take_the_plain_path_and_odd_ones_do_not() -> None:
    """Not vacuous: the clients' usual requests are plain, and each odd trait sends a
    request to llhttp."""
    body = b'{"model": "m", "stream": true}'
    plain = (
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    taken = read_plain(plain, MAX_BODY)
    assert taken is not None
    method, target, head, got = taken
    assert (method, target, got) == (b"POST", b"/openai/v1/chat/completions", body)
    assert head == (
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"Accept-Encoding: gzip, deflate\r\nContent-Type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )
    odd = {
        "two requests in one read": plain + plain,
        "the body still coming": plain[:-3],
        "HTTP/1.0": plain.replace(b"HTTP/1.1", b"HTTP/1.0"),
        "two Host headers": plain.replace(b"Host: 1", b"Host: a\r\nHost: 1"),
        "no Host": plain.replace(b"Host: 127.0.0.1:8080\r\n", b""),
        "a closing request": plain.replace(b"keep-alive", b"close"),
        "chunked": plain.replace(b"Connection: keep-alive", b"Transfer-Encoding: chunked"),
        "Expect": plain.replace(b"Connection: keep-alive", b"Expect: 100-continue"),
        "a padded value": plain.replace(b"gzip, deflate", b"gzip, deflate "),
        "obs-text": plain.replace(b"gzip", b"gz\xc3\xa9p"),
        "a body over the limit": plain.replace(
            b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + MAX_BODY)
        )
        + b"x" * MAX_BODY,
    }
    for trait, data in odd.items():
        assert read_plain(data, MAX_BODY) is None, trait


def test_a_plain_request_after_a_partial_one_is_left_to_llhttp() -> None:
    """The plain path runs only between messages: bytes that complete llhttp's message
    are llhttp's."""
    first = b"GET /v2/health/ready HTTP/1.1\r\nhost: a\r\n\r\n"
    reader = RequestReader(MAX_BODY)
    reader.feed(first[:10], _Writer())  # type: ignore[arg-type]
    assert reader.next_request() is None and reader.in_message
    reader.feed(first[10:], _Writer())  # type: ignore[arg-type]
    request = reader.next_request()
    assert isinstance(request, Request) and request.target == b"/v2/health/ready"
    reader.feed(first, _Writer())  # type: ignore[arg-type]
    again = reader.next_request()
    assert isinstance(again, Request) and again.upstream_head == request.upstream_head
