"""The pairwise judge against a judge server implemented here: real HTTP, the
chat-completions shape, deterministic answers (the longer answer wins)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bgserve.app.judge import JudgeSettings, PairwiseJudge
from bgserve.evaluation.comparison import SlotResult
from bgserve.evaluation.golden import GoldenCase
from bgserve.evaluation.judging import combine, green_first, parse_choice, summarize_judgements

_ANSWERS = re.compile(r"Answer A:\n(.*)\n\nAnswer B:\n(.*)\n\nWhich answer", re.S)


class JudgeServer:
    """An OpenAI-compatible ``/v1/chat/completions`` on loopback.

    ``mode`` "longer" prefers the answer with more words (TIE when equal); "always-a"
    always answers A, the pure position bias the judge's order handling must cancel.
    Every request body and its Authorization header are kept.
    """

    def __init__(self, mode: str = "longer") -> None:
        self.mode = mode
        self.requests: list[tuple[dict[str, Any], str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((body, self.headers.get("Authorization")))
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                choice = server.choose(body["messages"][-1]["content"])
                self._send(
                    200, {"choices": [{"message": {"role": "assistant", "content": choice}}]}
                )

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def choose(self, content: str) -> str:
        if self.mode == "always-a":
            return "A"
        found = _ANSWERS.search(content)
        assert found is not None, content
        a, b = (len(part.split()) for part in found.groups())
        return "TIE" if a == b else ("A" if a > b else "B")

    def __enter__(self) -> JudgeServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def judge_server() -> Iterator[JudgeServer]:
    with JudgeServer() as server:
        yield server


CASES = [GoldenCase(id=f"c{i}", inputs={"text": f"input {i}"}) for i in range(12)]


def answers(words: int) -> dict[str, SlotResult]:
    return {c.id: SlotResult(output=" ".join(["word"] * words), latency_ms=1.0) for c in CASES}


def run(judge: PairwiseJudge, blue: int, green: int) -> dict[str, Any]:
    return asyncio.run(judge.judge_all(CASES, answers(blue), answers(green), concurrency=4))


def test_the_longer_green_wins_every_case_whatever_its_position(
    judge_server: JudgeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-test")
    judge = PairwiseJudge(
        JudgeSettings(url=judge_server.url, model="judge-1", api_key_env="TEST_JUDGE_KEY")
    )
    found = run(judge, blue=3, green=6)
    assert {j.outcome for j in found.values()} == {"win"}
    positions = {green_first(c.id, "bgserve") for c in CASES}
    assert positions == {True, False}, "the order is drawn per case"
    body, auth = judge_server.requests[0]
    assert (body["model"], body["temperature"], auth) == ("judge-1", 0, "Bearer sk-test")
    assert len(judge_server.requests) == len(CASES)


def test_a_shorter_green_loses_and_equal_answers_tie(judge_server: JudgeServer) -> None:
    judge = PairwiseJudge(JudgeSettings(url=judge_server.url, model="judge-1"))
    assert {j.outcome for j in run(judge, blue=6, green=3).values()} == {"lose"}
    assert {j.outcome for j in run(judge, blue=4, green=4).values()} == {"tie"}
    auth = judge_server.requests[0][1]
    assert auth is None, "no key in the environment: no Authorization header"


def test_both_orders_cancel_a_judge_that_always_picks_the_first_answer() -> None:
    with JudgeServer(mode="always-a") as server:
        one = PairwiseJudge(JudgeSettings(url=server.url, model="m"))
        biased = run(one, blue=3, green=6)
        assert {j.outcome for j in biased.values()} == {"win", "lose"}
        both = PairwiseJudge(JudgeSettings(url=server.url, model="m", both_orders=True))
        cancelled = run(both, blue=3, green=6)
        assert {j.outcome for j in cancelled.values()} == {"tie"}
        assert len(server.requests) == len(CASES) * 3


def test_an_unreachable_or_failing_judge_gives_error_outcomes(judge_server: JudgeServer) -> None:
    wrong_path = PairwiseJudge(JudgeSettings(url=judge_server.url + "/nope", model="m"))
    found = run(wrong_path, blue=3, green=6)
    assert {j.outcome for j in found.values()} == {"error"}
    assert "HTTP 404" in (found["c0"].error or "")
    judge_server.httpd.server_close()
    closed = PairwiseJudge(JudgeSettings(url="http://127.0.0.1:9/v1", model="m"))
    assert {j.outcome for j in run(closed, 3, 6).values()} == {"error"}


def test_replies_are_read_leniently_and_orders_combine() -> None:
    assert parse_choice("B") == "B"
    assert parse_choice("Answer a is better: A.") == "A"
    assert parse_choice("tie") == "TIE"
    with pytest.raises(ValueError, match="names neither"):
        parse_choice("both are fine")
    assert combine([(True, "A"), (False, "B")]).outcome == "win"
    assert combine([(True, "B"), (False, "A")]).outcome == "lose"
    assert combine([(True, "A"), (False, "A")]).outcome == "tie"


def test_win_rate_counts_ties_half_and_has_an_interval() -> None:
    judgements = [combine([(True, "A")])] * 6 + [combine([(True, "TIE")])] * 2
    judgements += [combine([(True, "B")])] * 2
    summary = summarize_judgements(judgements, "m", False, 0.95)
    assert (summary.wins, summary.losses, summary.ties, summary.judged) == (6, 2, 2, 10)
    assert summary.win_rate == pytest.approx(0.7)
    assert summary.interval is not None
    assert summary.interval.low < 0.7 < summary.interval.high


def test_a_judge_that_answered_nothing_fails_the_verdict_and_names_the_case() -> None:
    from bgserve.evaluation.comparison import JudgeSetup, compare
    from bgserve.evaluation.judging import Judgement

    failed = {c.id: Judgement(outcome="error", orders=[], error="HTTP 500") for c in CASES}
    report = compare(CASES, answers(3), answers(3), judgements=failed, judge=JudgeSetup("m", False))
    assert report.verdict.reasons == [
        f"the judge gave no usable answer on any of {len(CASES)} cases"
    ]
    assert report.cases[0].problems == ["the judge failed: HTTP 500"]
