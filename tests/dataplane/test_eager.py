"""start: a coroutine's first step runs inside the loop callback that starts it; its task
is made once it can go on."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import pytest
import uvloop

from bgserve.dataplane.eager import Started, start, to_task


def start_from_callback(
    coro: Coroutine[Any, Any, Any], then: Callable[[Started | None], None] = lambda _: None
) -> Any:
    """Start ``coro`` from a loop callback (as a protocol's data callback does) on uvloop,
    call ``then`` with what start returned, in the same callback, and return the result
    of the task once it is made (None when there is none)."""

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        made: asyncio.Future[Started | None] = loop.create_future()

        def callback() -> None:
            started = start(loop, coro)
            then(started)
            made.set_result(started)

        loop.call_soon(callback)
        started = await made
        while started is not None and started.task is None:
            await asyncio.sleep(0.001)
        return None if started is None or started.task is None else await started.task

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def test_the_first_step_runs_before_start_returns_and_a_bare_yield_makes_the_task() -> None:
    log: list[str] = []

    async def work() -> str:
        log.append(f"first step, in a task: {asyncio.current_task() is not None}")
        await to_task()
        async with asyncio.timeout(5):  # needs the task
            log.append(f"then, in a task: {asyncio.current_task() is not None}")
            await asyncio.sleep(0.01)
        return "done"

    def check(started: Started | None) -> None:
        log.append(f"task made: {started is not None and started.task is not None}")

    assert start_from_callback(work(), check) == "done"
    assert log == ["first step, in a task: False", "task made: True", "then, in a task: True"]


@pytest.mark.parametrize("outcome", ["result", "exception"])
def test_a_first_step_waiting_for_a_future_gets_its_task_when_the_future_is_done(
    outcome: str,
) -> None:
    log: list[str] = []

    async def work() -> str:
        loop = asyncio.get_running_loop()
        later: asyncio.Future[int] = loop.create_future()
        if outcome == "result":
            loop.call_later(0.01, later.set_result, 5)
        else:
            loop.call_later(0.01, later.set_exception, ValueError("no"))
        value: int | str
        try:
            value = await later  # the first step ends here
        except ValueError as exc:
            value = str(exc)
        log.append(f"got {value} in a task: {asyncio.current_task() is not None}")
        return f"after {value}"

    def check(started: Started | None) -> None:
        log.append(f"task made at once: {started is not None and started.task is not None}")

    got = "5" if outcome == "result" else "no"
    assert start_from_callback(work(), check) == f"after {got}"
    assert log == ["task made at once: False", f"got {got} in a task: True"]


def test_a_coroutine_ending_in_its_first_step_needs_no_task() -> None:
    ran: list[str] = []

    async def quick() -> None:
        ran.append("ran")

    returned: list[Started | None] = []
    start_from_callback(quick(), returned.append)

    assert ran == ["ran"] and returned == [None]


def test_what_the_first_step_raises_is_raised_by_a_task() -> None:
    async def broken() -> int:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        start_from_callback(broken())


@pytest.mark.parametrize("wait", ["bare yield", "future"])
def test_cancel_reaches_the_coroutine_where_it_waits(wait: str) -> None:
    log: list[str] = []

    async def waits() -> None:
        try:
            if wait == "future":
                await asyncio.get_running_loop().create_future()  # never done
            else:
                await to_task()
            log.append("went on")
        finally:
            log.append("finally")

    def cancel(started: Started | None) -> None:
        assert started is not None
        started.cancel()  # before the loop ran the task once, or made it

    with pytest.raises(asyncio.CancelledError):
        start_from_callback(waits(), cancel)
    assert log == ["finally"]


def test_a_first_step_waiting_for_something_else_than_a_future_is_refused() -> None:
    @types.coroutine
    def odd() -> Generator[str, None, None]:
        yield "not a future"

    async def waits() -> None:
        await odd()

    async def main() -> None:
        with pytest.raises(TypeError, match="not an asyncio future"):
            start(asyncio.get_running_loop(), waits())

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
