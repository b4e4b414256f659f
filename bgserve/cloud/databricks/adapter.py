"""The loopback adapter through which bgserve's golden comparison calls one served entity.

The comparison speaks OIP v2 (an ``inputs`` tensor per template variable, the answer's
``output`` tensor); a Databricks entity serving the bundle speaks MLflow's scoring
protocol (``dataframe_split`` in, ``predictions`` out) at its own invocations route,
``/serving-endpoints/<endpoint>/served-models/<entity>/invocations``, which bypasses the
traffic config. The adapter listens on 127.0.0.1, translates each body, and makes the call
through the SDK's ApiClient (its authentication, its retries of 429 and 503), so no token
ever leaves the backend. Chat bodies are refused: Databricks serves the bundle's pyfunc,
not the slot's OpenAI routes.

The adapter calls Databricks with bgserve's identity, so it must not be a way in for
anyone else on the machine (another user's process, a web page posting to loopback): it
answers only calls that carry its own random secret (:data:`SECRET_HEADER`, given to the
comparison with each :meth:`InvocationAdapter.url_for`), and forwards only to the entity
paths it handed out, never to a path the caller makes up.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The entity paths the adapter forwards to, one per served entity asked for.
_PREFIX = "/entity"
SECRET_HEADER = "x-bgserve-adapter"
"""The header carrying the adapter's secret on each call."""


def dataframe_split(body: Any) -> dict[str, Any]:
    """An OIP v2 infer body as MLflow's ``dataframe_split``: one column per input tensor,
    one row per element. Raises ValueError for a body that is not one."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise ValueError("an OIP v2 infer body needs a non-empty 'inputs' list")
    columns: list[str] = []
    data: list[list[Any]] = []
    for tensor in inputs:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("data"), list):
            raise ValueError("each OIP v2 input needs a 'name' and a 'data' list")
        if data and len(tensor["data"]) != len(data[0]):
            raise ValueError("every OIP v2 input needs as many elements as the first")
        columns.append(str(tensor.get("name")))
        data.append(tensor["data"])
    return {
        "dataframe_split": {"columns": columns, "data": [list(r) for r in zip(*data, strict=True)]}
    }


def oip_answer(model: str, answer: Any) -> dict[str, Any]:
    """MLflow's ``{"predictions": [...]}`` as an OIP v2 answer with one ``output`` tensor.
    Raises ValueError for an answer without predictions."""
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list):
        raise ValueError("the entity's answer has no 'predictions' list")
    output = {"name": "output", "datatype": "BYTES", "shape": [len(predictions)]}
    return {"model_name": model, "outputs": [{**output, "data": [str(p) for p in predictions]}]}


class InvocationAdapter:
    """OIP v2 in, a served entity's invocations route out (see the module docstring).
    Started by the first :meth:`url_for`; stopped by :meth:`close`."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.secret = secrets.token_urlsafe(32)
        self._paths: set[str] = set()
        self._server: ThreadingHTTPServer | None = None
        self._guard = threading.Lock()

    def url_for(self, entity_path: str) -> str:
        """The loopback URL that calls the entity at ``entity_path`` (starts the adapter);
        each call must carry :data:`SECRET_HEADER` with :attr:`secret`."""
        with self._guard:
            self._paths.add(entity_path)
            if self._server is None:
                self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
                self._server.daemon_threads = True
                threading.Thread(target=self._server.serve_forever, daemon=True).start()
            port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}{_PREFIX}{entity_path}"

    def forward(self, entity_path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """One call: status and the OIP v2 answer, or an error naming what failed."""
        from databricks.sdk.errors.base import DatabricksError

        try:
            request = json.loads(body)
        except ValueError:
            return 400, {"error": "the body is not JSON"}
        if isinstance(request, dict) and "messages" in request:
            return 501, {"error": "chat releases are not served on Databricks by bgserve"}
        try:
            scoring = dataframe_split(request)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        try:
            answer = self.client.api_client.do("POST", entity_path, body=scoring)
            return 200, oip_answer(entity_path.split("/")[4], answer)
        except DatabricksError as exc:
            code = getattr(exc, "error_code", None) or type(exc).__name__
            return 502, {"error": f"Databricks answered {code}: {exc}"}
        except ValueError as exc:
            return 502, {"error": str(exc)}

    def refusal(self, path: str, secret: str) -> tuple[int, dict[str, Any]]:
        """Why a call of ``path`` with ``secret`` is refused (401, 404); ``(0, {})`` when it
        is not."""
        if not hmac.compare_digest(secret.encode(), self.secret.encode()):
            return 401, {"error": f"calls need the adapter's {SECRET_HEADER}"}
        with self._guard:
            known = path.removeprefix(_PREFIX) in self._paths and path.startswith(_PREFIX)
        return (0, {}) if known else (404, {"error": "no such entity route"})

    def close(self) -> None:
        """Stop listening. Idempotent."""
        with self._guard:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        adapter = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                status, answer = adapter.refusal(self.path, self.headers.get(SECRET_HEADER, ""))
                if status:
                    self.close_connection = True  # its body is left unread
                else:
                    body = self.rfile.read(int(self.headers.get("content-length") or 0))
                    status, answer = adapter.forward(self.path.removeprefix(_PREFIX), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self.send_error(405)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
