"""The proxies bgserve's router is compared with: nginx and HAProxy, same weighted pair."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from types import TracebackType
from typing import Protocol, Self

import psutil
from _haproxy import Haproxy, find_haproxy
from _nginx import Nginx, find_nginx

Upstreams = Sequence[tuple[str, int, int]]


class Peer(Protocol):
    """A reverse proxy running on loopback in front of the slots."""

    port: int

    def processes(self) -> list[psutil.Process]:
        """Its processes, for the CPU time they use."""
        ...

    def __enter__(self) -> Self:
        """Start it and wait until it listens."""
        ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop it and remove its temporary directory."""
        ...


# name: (find the binary, start it in front of weighted upstreams, the Debian package)
KNOWN: dict[str, tuple[Callable[[], str | None], Callable[[str, Upstreams], Peer], str]] = {
    "nginx": (find_nginx, Nginx, "nginx-light"),
    "haproxy": (find_haproxy, Haproxy, "haproxy"),
}


def start_peers(context: ExitStack, upstreams: Upstreams, required: bool) -> dict[str, Peer]:
    """Every known peer installed here, started in ``context``; a missing one is skipped
    with a note, or is an error when ``required`` (CI)."""
    started: dict[str, Peer] = {}
    for name, (find, start, package) in KNOWN.items():
        binary = find()
        if binary is None:
            fix = f"run bench/setup.sh (apt-get install {package})"
            if required:
                raise SystemExit(f"{name} not found: {fix}")
            print(f"{name} not found ({fix}): the {name} path is skipped")
            continue
        started[name] = context.enter_context(start(binary, upstreams))
    return started
