"""The plain request, read without llhttp: one regular expression for the head's grammar.

Most requests a data plane sees are plain: one HTTP/1.1 request in one read, an
origin-form target, ``Name: value`` headers, one Host, a Content-Length and its whole
body. llhttp parses them correctly but calls back into Python once per header, and on
the router's cold caches (it sleeps between requests) that costs about three times what
one match of a compiled pattern costs (82 against 27 µs after a 50 ms pause, measured
alone). :func:`read_plain` takes such a request in one match and gives up (None) on
anything else, which :class:`~bgserve.dataplane.http1.RequestReader` then hands to llhttp.

What it accepts is a strict subset of what llhttp accepts, and it makes the same
:class:`~bgserve.dataplane.http1.Request` llhttp's callbacks would (the differential tests
hold both to that): every refusal, and every odd case, stays llhttp's.
"""

from __future__ import annotations

import re

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# A value with no leading or trailing whitespace, so that the line as sent is the line
# llhttp's path writes (``name: value``); an empty or odd value goes to llhttp.
_VALUE = rb"[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?"
_PLAIN_HEAD = re.compile(
    rb"(GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH) "
    rb"(/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*) HTTP/1\.1\r\n"
    rb"((?:" + _TOKEN + rb": " + _VALUE + rb"\r\n)*)\r\n"
)
# The headers llhttp's path handles apart (hop-by-hop, framing, Host): the line's name and
# value. Only Host, one Content-Length and one Connection are plain.
_SPECIAL = re.compile(
    rb"^(connection|keep-alive|proxy-connection|transfer-encoding|te|trailer|upgrade|expect"
    rb"|content-length|host): ([^\r]*)\r\n",
    re.IGNORECASE | re.MULTILINE,
)
_DROPPED = re.compile(rb"^(?:connection|content-length): [^\r]*\r\n", re.IGNORECASE | re.MULTILINE)
_LENGTH = re.compile(rb"[0-9]{1,15}")
# Far under the router's head limit: a longer head is llhttp's to measure and refuse.
_PLAIN_HEAD_MAX = 16 * 1024


def read_plain(data: bytes, max_body: int) -> tuple[bytes, bytes, bytes, bytes] | None:
    """``(method, target, upstream_head, body)`` if ``data`` is exactly one plain
    keep-alive request, else None (nothing is refused here).

    ``upstream_head`` is the head llhttp's path writes: the request line, the headers as
    sent but Connection and Content-Length, and ``content-length`` last.
    """
    # The pattern never looks past the first blank line, nor past a head llhttp measures.
    head_end = data.find(b"\r\n\r\n", 0, _PLAIN_HEAD_MAX)
    head = _PLAIN_HEAD.match(data, 0, head_end + 4) if head_end > 0 else None
    if head is None:
        return None
    method, target, lines = head.groups()
    hosts = connections = 0
    length = -1
    for name, value in _SPECIAL.findall(lines):
        name = name.lower()
        if name == b"host":
            hosts += 1
        elif name == b"content-length" and length < 0 and _LENGTH.fullmatch(value):
            length = int(value)
        elif name == b"connection" and value.lower() == b"keep-alive":
            connections += 1
        else:
            return None  # framing, hop-by-hop or closing headers: llhttp's path decides
    body = data[head.end() :]
    if hosts != 1 or connections > 1 or len(body) != max(length, 0) or len(body) > max_body:
        return None
    upstream_head = b"%s %s HTTP/1.1\r\n%scontent-length: %d\r\n\r\n" % (
        method,
        target,
        _DROPPED.sub(b"", lines),
        len(body),
    )
    return method, target, upstream_head, body
