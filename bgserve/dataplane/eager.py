"""Coroutines whose first step runs at once, in the loop callback that starts them, and
whose task is made only once they can go on.

A request that reaches the router after a pause finds its caches cold, and then every
task step, wake-up or timer set costs tens of microseconds. Worse, on a busy machine
the slot the request was just written to may wait for the router's CPU: whatever the
router still does after the write delays the slot's start. So the router runs a
request's coroutine from the client connection's data callback (:func:`start`):
parsing, routing, the slot's pick, a pooled connection and the write to the slot are
plain calls there, and the coroutine then waits for the slot's answer with nothing
more done (no task, no timer scope). Its task is made when what it waits for is done.

The first step runs outside any task, so it must not use ``asyncio.timeout`` or
``asyncio.current_task``: code that needs them first hands over to a task with
``await`` :func:`to_task` (connecting a new slot connection does so).
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any


class Started:
    """A coroutine :func:`start` ran up to a wait; ``task`` runs the rest once made."""

    __slots__ = ("_coro", "_loop", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> None:
        self._loop = loop
        self._coro = coro
        self.task: asyncio.Task[Any] | None = None

    def go(self, _done: object = None) -> None:
        """Make the task (once): its first step resumes the coroutine where it waits,
        and gets what it waited for (a result or an exception) as a task would."""
        if self.task is None:
            self.task = self._loop.create_task(self._coro)

    def cancel(self) -> None:
        """Cancel the coroutine where it waits (its task is made for that if need be)."""
        self.go()
        assert self.task is not None
        self.task.cancel()


def start(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> Started | None:
    """Run ``coro`` on ``loop`` up to its first wait now; None if it ended there (its
    result is dropped).

    Call it from a callback of the loop, not from a task. After a bare yield
    (:func:`to_task`) the task is made at once; after an ``await`` of a future, when the
    future is done. What the first step raises is raised by a task, as if the step had
    run in it.
    """
    try:
        first = coro.send(None)
    except StopIteration:
        return None
    except BaseException as exc:
        started = Started(loop, _raise(exc))
        started.go()
        return started
    started = Started(loop, coro)
    if first is None:
        started.go()
    elif isinstance(first, asyncio.Future):
        first.add_done_callback(started.go)
    else:
        coro.close()
        raise TypeError(f"{coro!r} waited for {first!r}, which is not an asyncio future")
    return started


@types.coroutine
def to_task() -> Generator[None, None, None]:
    """Suspend for one turn of the loop: in :func:`start`'s first step, hand the rest over
    to a task; in a task, let the loop run once (as ``asyncio.sleep(0)``)."""
    yield


async def _raise(exc: BaseException) -> None:
    raise exc
