"""json_loads, the chat body parser: for every body, json.loads's value or json.loads's
error (the same type and message), however the body is made; only an integer past 64
bits may come back as a float (the router reads strings and booleans from it)."""

from __future__ import annotations

import json
import sys

import pytest

from bgserve.dataplane.openai_api import json_loads

OBJECT = {"model": "m", "messages": [{"role": "user", "content": "hé ✓"}], "stream": True}
TEXT = json.dumps(OBJECT)

BODIES = {
    "object": TEXT.encode(),
    "object, raw UTF-8": json.dumps(OBJECT, ensure_ascii=False).encode(),
    "trailing whitespace": TEXT.encode() + b" \t\r\n",
    "trailing garbage": TEXT.encode() + b" x",
    "a second object": TEXT.encode() + b"{}",
    "a closing brace too many": b"{}}",
    "leading whitespace": b" \n" + TEXT.encode(),
    "UTF-8 BOM": b"\xef\xbb\xbf" + TEXT.encode(),
    "UTF-16-LE": TEXT.encode("utf-16-le"),
    "UTF-16-BE": TEXT.encode("utf-16-be"),
    "UTF-16 with BOM": TEXT.encode("utf-16"),
    "UTF-32-LE": TEXT.encode("utf-32-le"),
    "brace then NUL": b"{\x00}",
    "two bytes, brace then NUL": b"{\x00",
    "invalid UTF-8": b'{"model": "\xff"}',
    "UTF-8 encoded lone surrogate": b'{"model": "\xed\xa0\x80"}',
    "escaped lone surrogate": b'{"model": "\\ud800"}',
    "NaN and Infinity": b'{"a": NaN, "b": -Infinity}',
    "control character in a string": b'{"a": "x\ny"}',
    "duplicate keys": b'{"a": 1, "a": 2}',
    "huge integer": b'{"a": ' + b"9" * 4000 + b"}",
    "float out of range": b'{"a": 1e400, "b": -1e400}',
    "negative zero and exponents": b'{"a": -0.0, "b": 1E-7, "c": 0.1}',
    "nested deeper than orjson reads": b'{"a": ' + b"[" * 1100 + b"]" * 1100 + b"}",
    "unterminated": b'{"a": [1, 2',
    "empty": b"",
    "only whitespace": b"  ",
    "array": b"[1, 2]",
    "number": b"42",
    "just a brace": b"{",
}


def outcome(parse: object, body: bytes) -> tuple[str, object]:
    try:
        return "value", parse(body)  # type: ignore[operator]
    except (ValueError, RecursionError) as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_json_loads_gives_what_json_loads_gives(body: bytes) -> None:
    assert outcome(json_loads, body) == outcome(json.loads, body)


def test_an_integer_past_64_bits_leaves_the_routing_fields_as_json_loads_reads_them() -> None:
    body = b'{"model": "m", "seed": 18446744073709551616, "stream": true, "user": "u"}'
    parsed, expected = json_loads(body), json.loads(body)
    assert {k: parsed[k] for k in ("model", "stream", "user")} == {
        k: expected[k] for k in ("model", "stream", "user")
    }
    assert parsed["seed"] == pytest.approx(expected["seed"])


def test_a_body_nested_too_deep_raises_recursion_error_as_json_loads_does() -> None:
    depth = sys.getrecursionlimit() * 2
    deep = b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(RecursionError):
        json.loads(deep)
    with pytest.raises(RecursionError):
        json_loads(deep)
