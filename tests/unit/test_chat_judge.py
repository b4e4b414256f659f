"""The pairwise judge against a bgserve-style OpenAI endpoint on loopback: base URL
``.../openai/v1``, ``model`` = the deployment's name, the deployment's own prompt
messages first, template variables in a top-level ``variables`` object."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from openai.types.chat import ChatCompletion

from bgserve.app.judge import JudgeSettings, PairwiseJudge
from bgserve.domain.chat_prompt import chat_variables, render_messages
from bgserve.domain.comparison import SlotResult
from bgserve.domain.golden import GoldenCase, parse_cases
from bgserve.domain.judging import Judgement

DEPLOYMENT = "judge"
PROMPT = [{"role": "system", "content": "You judge answers about {{domain}} fairly."}]
_ANSWERS = re.compile(r"Answer A:\n(.*)\n\nAnswer B:\n(.*)\n\nWhich answer", re.S)


class DeploymentServer:
    """A bgserve deployment's OpenAI route as a client sees it: 404 with OpenAI's error
    shape for another path or model, 400 when a prompt variable is missing, else a chat
    completion whose content prefers the longer answer. Keeps each request and the
    conversation the model saw."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.seen: list[list[dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, body))
                status, payload = server.answer(self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path != "/openai/v1/chat/completions" or body.get("model") != DEPLOYMENT:
            return 404, error(f"no deployment {body.get('model')!r} at {path}", "not_found")
        values = body.get("variables") or {}
        missing = [v for v in chat_variables(PROMPT) if v not in values]
        if missing:
            return 400, error(f"variable {missing[0]!r} has no value", "invalid_request_error")
        conversation = [*render_messages(PROMPT, values), *body["messages"]]
        self.seen.append(conversation)
        found = _ANSWERS.search(conversation[-1]["content"])
        assert found is not None
        a, b = (len(part.split()) for part in found.groups())
        choice = "TIE" if a == b else ("A" if a > b else "B")
        reply = completion(f"{choice}, because it is more complete.")
        ChatCompletion.model_validate(reply)  # the shape the openai SDK reads
        return 200, reply

    def __enter__(self) -> DeploymentServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-judge",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": DEPLOYMENT,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 50, "completion_tokens": 6, "total_tokens": 56},
    }


@pytest.fixture
def deployment() -> Iterator[DeploymentServer]:
    with DeploymentServer() as server:
        yield server


CASES = parse_cases(
    [
        {"id": "c1", "inputs": {"question": "Capital of France?"}},
        {
            "id": "c2",
            "inputs": {"question": "Legs of a spider?"},
            "messages": [
                {"role": "assistant", "content": "Eight."},
                {"role": "user", "content": "And an insect?"},
            ],
        },
    ]
)


def judge_all(judge: PairwiseJudge, cases: list[GoldenCase]) -> dict[str, Judgement]:
    blue = {c.id: SlotResult(output="Paris.", latency_ms=1.0) for c in cases}
    green = {c.id: SlotResult(output="It is Paris, on the Seine.", latency_ms=1.0) for c in cases}
    return asyncio.run(judge.judge_all(cases, blue, green, concurrency=2))


def test_the_judge_works_against_a_bgserve_deployment(deployment: DeploymentServer) -> None:
    settings = JudgeSettings(
        url=f"{deployment.base}/openai/v1", model=DEPLOYMENT, variables={"domain": "geography"}
    )
    found = judge_all(PairwiseJudge(settings), CASES)
    assert {j.outcome for j in found.values()} == {"win"}
    for path, body in deployment.requests:
        assert path == "/openai/v1/chat/completions"
        assert (body["model"], body["temperature"]) == (DEPLOYMENT, 0)
        assert body["variables"] == {"domain": "geography"}
    conversation = deployment.seen[0]
    assert conversation[0] == {
        "role": "system",
        "content": "You judge answers about geography fairly.",
    }
    assert [m["role"] for m in conversation[1:]] == ["system", "user"]  # the judge's own


def test_a_cases_client_messages_are_shown_to_the_judge(deployment: DeploymentServer) -> None:
    settings = JudgeSettings(
        url=f"{deployment.base}/openai/v1", model=DEPLOYMENT, variables={"domain": "biology"}
    )
    judge_all(PairwiseJudge(settings), CASES[1:])
    question = deployment.seen[0][-1]["content"]
    assert "question: Legs of a spider?" in question
    assert "Conversation (the answers reply to its last message):" in question
    assert "assistant: Eight.\nuser: And an insect?" in question


def test_without_variables_none_are_sent_and_a_prompt_needing_them_is_a_judge_error(
    deployment: DeploymentServer,
) -> None:
    judge = PairwiseJudge(JudgeSettings(url=f"{deployment.base}/openai/v1", model=DEPLOYMENT))
    found = judge_all(judge, CASES)
    assert "variables" not in deployment.requests[0][1]
    assert {j.outcome for j in found.values()} == {"error"}
    assert "HTTP 400" in (found["c1"].error or "") and "'domain'" in (found["c1"].error or "")
    wrong = JudgeSettings(url=f"{deployment.base}/openai/v1", model="other", variables={})
    assert "HTTP 404" in (judge_all(PairwiseJudge(wrong), CASES)["c1"].error or "")
