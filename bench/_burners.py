"""CPU burners: processes spinning at normal priority beside a benchmark, as other jobs on a
shared machine would."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager


def _spin() -> None:
    while True:
        pass


@contextmanager
def burners(count: int) -> Iterator[None]:
    """``count`` processes spinning on a core each, at normal priority; killed on exit."""
    spinning = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(count)]
    for process in spinning:
        process.start()
    try:
        yield
    finally:
        for process in spinning:
            process.kill()
            process.join(5)
