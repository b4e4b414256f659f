"""LocalBackend with real slot processes: lifecycle, routing, failures, no orphans."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bgserve.backends.base import Backend
from bgserve.backends.local.backend import LocalBackend
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, ReadinessTimeout
from tests.support.models import infer_body, local_release, pid_gone, wait_until

# The echo bundle has no type hints on predict; MLflow warns about it every time.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:.*type hints:UserWarning"),
]


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    backend = LocalBackend("127.0.0.1", 0, ready_timeout=90, log_dir=tmp_path / "slots")
    try:
        yield backend
    finally:
        backend.close()


def _pid(backend: LocalBackend, release_id: int) -> int:
    pid = backend.slot_pid("demo", release_id)
    assert pid is not None
    return pid


def test_lifecycle_leaves_no_process_behind(backend: LocalBackend, bundles: dict[str, str]) -> None:
    as_protocol: Backend = backend
    blue, green = local_release(1, bundles["v1"]), local_release(2, bundles["v2"])

    info = as_protocol.ensure_slot("demo", blue)
    assert info.ready
    assert as_protocol.ensure_slot("demo", blue) == info  # idempotent: same process
    as_protocol.ensure_slot("demo", green)
    blue_pid, green_pid = _pid(backend, 1), _pid(backend, 2)
    direct = httpx.post(f"{info.endpoint}/v2/models/demo/infer", json=infer_body("d"))
    assert direct.json()["outputs"][0]["data"] == ["v1:D"]

    as_protocol.set_routes("demo", [Route("blue", 1, 0), Route("green", 2, 100)])
    routed = httpx.post(backend.data_plane_url("demo"), json=infer_body("r"))
    assert routed.headers["x-bgserve-slot"] == "green"
    assert routed.json()["outputs"][0]["data"] == ["v2:R"]

    with pytest.raises(BackendError, match="still takes traffic"):
        as_protocol.retire_slot("demo", 2)
    as_protocol.set_routes("demo", [Route("blue", 1, 100), Route("green", 2, 0)])
    as_protocol.retire_slot("demo", 2)
    assert pid_gone(green_pid)
    assert as_protocol.slot_info("demo", 2) is None
    as_protocol.retire_slot("demo", 2)  # idempotent
    assert httpx.post(backend.data_plane_url("demo"), json=infer_body("x")).status_code == 200

    as_protocol.close()
    assert pid_gone(blue_pid)
    as_protocol.close()  # idempotent


def test_set_routes_refuses_unknown_release_and_keeps_weights(
    backend: LocalBackend, bundles: dict[str, str]
) -> None:
    backend.ensure_slot("demo", local_release(1, bundles["v1"]))
    backend.set_routes("demo", [Route("blue", 1, 100)])

    with pytest.raises(BackendError, match="release 7 has no running slot"):
        backend.set_routes("demo", [Route("blue", 1, 50), Route("green", 7, 50)])
    with pytest.raises(BackendError, match=r"sum to 100, got \[90\]"):
        backend.set_routes("demo", [Route("blue", 1, 90)])
    assert [(t.role, t.weight) for t in backend.router.routes("demo")] == [("blue", 100)]


def test_slot_that_dies_while_starting_reports_its_log(
    backend: LocalBackend, tmp_path: Path
) -> None:
    with pytest.raises(BackendError) as caught:
        backend.ensure_slot("demo", local_release(5, str(tmp_path / "no-such-model")))

    assert not isinstance(caught.value, ReadinessTimeout)
    assert "exited with code" in caught.value.message
    assert "no-such-model" in caught.value.message
    assert backend.slot_info("demo", 5) is None


def test_readiness_timeout_kills_the_slot(tmp_path: Path, bundles: dict[str, str]) -> None:
    backend = LocalBackend("127.0.0.1", 0, ready_timeout=0.3, log_dir=tmp_path)
    others = {c.pid for c in _children()}  # slots of other tests' session fixtures
    try:
        with pytest.raises(ReadinessTimeout, match=r"not ready within 0\.3s"):
            backend.ensure_slot("demo", local_release(1, bundles["v1"]))
        assert backend.slot_info("demo", 1) is None
        children = [c for c in _children() if c.pid not in others]
        assert all("bgserve.slot.server" not in " ".join(c.cmdline()) for c in children)
    finally:
        backend.close()


def _children() -> list[Any]:
    import psutil

    return [
        c
        for c in psutil.Process().children(recursive=True)
        if c.is_running() and c.status() != psutil.STATUS_ZOMBIE
    ]


PARENT = textwrap.dedent(
    """
    import sys, threading
    sys.path.insert(0, {root!r})
    from tests.support.models import local_release
    from bgserve.backends.local.backend import LocalBackend
    backend = LocalBackend("127.0.0.1", 0, ready_timeout=90)
    backend.ensure_slot("demo", local_release(1, {bundle!r}))
    print(backend.slot_pid("demo", 1), flush=True)
    threading.Event().wait()
    """
)


def test_slot_dies_when_its_parent_is_killed(bundles: dict[str, str]) -> None:
    script = PARENT.format(root=str(Path(__file__).parents[2]), bundle=bundles["v1"])
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        slot_pid = int(parent.stdout.readline())
        assert not pid_gone(slot_pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        wait_until(lambda: pid_gone(slot_pid), 15, "the orphaned slot to exit")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def _post_on(sock: socket.socket, port: int, text: str) -> tuple[int, bytes]:
    """One infer request on an open keep-alive connection; its status and body."""
    body = json.dumps(infer_body(text)).encode()
    sock.sendall(
        b"POST /v2/models/demo/infer HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (port, len(body), body)
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(65536)
    head, _, rest = response.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split()[1]), rest


def test_a_model_error_is_a_500_that_keeps_the_connection_open(
    backend: LocalBackend, bundles: dict[str, str]
) -> None:
    # uvicorn closed the connection right after such a 500 (kserve's catch-all handler
    # re-raised the error to it): a router reusing the connection in that instant got
    # no answer at all, a 502 the demo counted as a failure nobody explained.
    info = backend.ensure_slot("demo", local_release(1, bundles["v1"]))
    port = int(info.endpoint.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        status, body = _post_on(sock, port, "fail:boom")
        assert status == 500 and b"ValueError : boom" in body
        time.sleep(0.3)  # what uvicorn sends after the answer has arrived by now
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(1, socket.MSG_PEEK)  # b"" here: the slot closed the connection
        sock.setblocking(True)
        status, body = _post_on(sock, port, "ok")
        assert status == 200 and json.loads(body)["outputs"][0]["data"] == ["v1:OK"]
