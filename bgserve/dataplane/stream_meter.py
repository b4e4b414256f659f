"""Streaming checks measured as a chat completion passes through the router.

A :class:`StreamMeter` sees each piece of the answer's body right after it was written to
the client, and keeps no copy of it: only the unfinished last line of a server-sent event
stream (an event is one ``data:`` line) waits for the next piece, and for a plain JSON
answer only a short tail, so a count split across two pieces is still read. It notes when
the first event with output (content, or a piece of a tool call's arguments) passed (time
to first token), when the last did, how many carried output, and
``usage.completion_tokens`` when the slot reports it.

:func:`record` adds one answer's figures to a slot's stream counters (laid out as
:data:`TTFT_AT`, :data:`TPOT_AT`, :data:`TOKENS_AT` histograms of
:mod:`bgserve.domain.latency`'s buckets, then the sum of output tokens at
:data:`TOKEN_SUM_AT`).
"""

from __future__ import annotations

import re
import time

from bgserve.domain.latency import BUCKETS, bucket_of

TTFT_AT = 0
TPOT_AT = BUCKETS
TOKENS_AT = 2 * BUCKETS
TOKEN_SUM_AT = 3 * BUCKETS
STREAM_COUNTERS = 3 * BUCKETS + 1

# An event carrying output: a non-empty content string, or a piece of a tool call's
# arguments (a tool call's own quotes are escaped inside those, so they never match).
_CONTENT = re.compile(rb'"(?:content|arguments)"\s*:\s*"(?!")')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_LINE_LIMIT = 1 << 20  # an SSE line longer than this is not an event we can read
_TAIL = 64


class StreamMeter:
    """Time to first token, time per output token and output tokens of one answer.

    ``streaming`` says the client asked for ``stream: true`` (an SSE answer); a plain
    answer yields only its output tokens. ``started`` is a :func:`time.perf_counter`
    reading taken when the request was picked for a slot; ``queued`` the seconds the
    slot says the request waited for its model (``x-bgserve-queue-ms``: a model that
    makes one generation at a time), which the time to first token leaves out: that wait
    depends on the load and on the slot's share of it, not on the release.
    """

    __slots__ = (
        "_carry",
        "chunks",
        "first",
        "last",
        "queued",
        "started",
        "streaming",
        "usage_tokens",
    )

    def __init__(self, streaming: bool, started: float = 0.0) -> None:
        self.streaming = streaming
        self.started = started
        self.queued = 0.0
        self.first: float | None = None
        self.last = 0.0
        self.chunks = 0
        self.usage_tokens: int | None = None
        self._carry = b""

    def feed(self, pieces: list[bytes]) -> None:
        """Read the body pieces just relayed (de-chunked)."""
        for piece in pieces:
            if self.streaming:
                self._feed_events(piece)
            else:
                self._feed_plain(piece)

    def _feed_events(self, piece: bytes) -> None:
        data = self._carry + piece if self._carry else piece
        end = data.rfind(b"\n") + 1
        self._carry = data[end:] if len(data) - end < _LINE_LIMIT else b""
        if not end:
            return
        found = len(_CONTENT.findall(data, 0, end))
        if found:
            now = time.perf_counter()
            if self.first is None:
                self.first = now
            self.last = now
            self.chunks += found
        if b"completion_tokens" in data:
            self._read_usage(data, end)

    def _feed_plain(self, piece: bytes) -> None:
        data = self._carry + piece if self._carry else piece
        self._read_usage(data, len(data))
        self._carry = data[-_TAIL:]

    def _read_usage(self, data: bytes, end: int) -> None:
        for match in _COMPLETION_TOKENS.finditer(data, 0, end):
            if match.end() < end:  # digits at the very end may go on in the next piece
                self.usage_tokens = int(match.group(1))

    def output_tokens(self) -> int | None:
        """The reported completion tokens, else the content events counted (streams)."""
        if self.usage_tokens is not None:
            return self.usage_tokens
        return self.chunks if self.streaming else None

    def ttft_ms(self) -> float | None:
        """Milliseconds from the pick to the first content event, less the slot's queue
        wait (streams only)."""
        if self.first is None:
            return None
        return max(0.0, self.first - self.started - self.queued) * 1000.0

    def tpot_ms(self) -> float | None:
        """Milliseconds per output token after the first (streams of 2 tokens or more)."""
        tokens = self.output_tokens()
        if self.first is None or tokens is None or tokens < 2:
            return None
        return (self.last - self.first) * 1000.0 / (tokens - 1)


def record(counters: list[int], meter: StreamMeter) -> None:
    """Add the answer ``meter`` saw to a slot's stream counters (on the router's loop)."""
    ttft = meter.ttft_ms()
    if ttft is not None:
        counters[TTFT_AT + bucket_of(ttft)] += 1
    tpot = meter.tpot_ms()
    if tpot is not None:
        counters[TPOT_AT + bucket_of(tpot)] += 1
    tokens = meter.output_tokens()
    if tokens is not None:
        counters[TOKENS_AT + bucket_of(tokens)] += 1
        counters[TOKEN_SUM_AT] += tokens
