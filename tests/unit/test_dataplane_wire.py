"""The wire between bgserve and its data-plane process: route rows survive JSON, the
process answers every operation through its table, and shadow pages add up to a batch."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bgserve.dataplane.main import ControlDispatcher
from bgserve.dataplane.router import Router
from bgserve.dataplane.wire import (
    Op,
    RouteTarget,
    ShadowBatch,
    ShadowPage,
    ShadowPair,
    shadow_batch,
)


def on_the_wire(value: object) -> Any:
    """``value`` as the other end of the channel reads it."""
    return json.loads(json.dumps(value))


def test_a_route_row_survives_the_channel_as_a_json_array() -> None:
    target = RouteTarget("green", 7, "127.0.0.1", 9001, 30)
    row = on_the_wire(target)
    assert row == ["green", 7, "127.0.0.1", 9001, 30]
    assert isinstance(row, list)
    assert RouteTarget.from_row(row) == target
    assert RouteTarget.from_row(row).address == ("127.0.0.1", 9001)


@pytest.mark.parametrize("row", [["green", 7, "h", 1], ["green", "x", "h", 1, 2]])
def test_a_malformed_row_is_refused(row: list[object]) -> None:
    with pytest.raises(ValueError):
        RouteTarget.from_row(row)


def test_every_operation_but_the_first_configuration_has_one_handler() -> None:
    dispatcher = ControlDispatcher(Router())
    assert set(dispatcher.handlers) == set(Op) - {Op.CONFIGURE}


def test_the_process_applies_each_operation_as_the_router_would() -> None:
    dispatcher = ControlDispatcher(Router())

    def call(op: str, **args: object) -> object:
        return dispatcher.handle(on_the_wire({"id": 1, "op": op, **args}))

    rows = on_the_wire([RouteTarget("blue", 1, "127.0.0.1", 8, 100)])
    assert call("set_routes", deployment="d", version=1, routes=rows) is True
    assert dispatcher.router.routes("d") == [RouteTarget("blue", 1, "127.0.0.1", 8, 100)]
    assert call("mark_down", host="127.0.0.1", port=8) is True
    assert call("mark_down", host="127.0.0.1", port=8) is False
    assert call("is_down", host="127.0.0.1", port=8) is True
    assert call("mark_up", host="127.0.0.1", port=8) is None
    assert call("is_down", host="127.0.0.1", port=8) is False
    stats = call("stats")
    assert isinstance(stats, dict) and stats["unrouted"] == 0
    assert [s["role"] for s in stats["slots"]] == ["blue"]
    with pytest.raises(ValueError, match="no green route"):
        call("set_shadow", deployment="d", percent=10, max_queue=4)
    page = call("shadow_pairs", deployment="d", limit=5)
    assert page == {"pairs": [], "dropped": 0, "green_errors": 0, "more": False}
    assert call("ping") == "pong"


def test_an_unknown_operation_or_a_missing_argument_is_an_error_the_channel_reports() -> None:
    dispatcher = ControlDispatcher(Router())
    with pytest.raises(ValueError, match="unknown data-plane operation 'configure'"):
        dispatcher.handle({"id": 1, "op": "configure"})
    with pytest.raises(ValueError, match="unknown data-plane operation 'reboot'"):
        dispatcher.handle({"id": 1, "op": "reboot"})
    with pytest.raises(KeyError):
        dispatcher.handle({"id": 1, "op": "mark_down", "host": "127.0.0.1"})


def test_a_malformed_route_row_leaves_the_version_unapplied() -> None:
    dispatcher = ControlDispatcher(Router())
    with pytest.raises(ValueError):
        dispatcher.set_routes("d", 3, [["blue", 1, "127.0.0.1"]])
    assert dispatcher.set_routes("d", 3, [["blue", 1, "127.0.0.1", 8, 100]])


def test_shadow_pages_add_up_to_one_batch_of_typed_pairs() -> None:
    pair = ShadowPair("r1", "{}", "a", None, "timeout", 1.5, None, truncated=True)
    pages: list[ShadowPage] = [
        {"pairs": [vars(pair)], "dropped": 2, "green_errors": 1, "more": True},
        {"pairs": [], "dropped": 1, "green_errors": 0, "more": False},
    ]
    wired: list[ShadowPage] = on_the_wire(pages)
    assert shadow_batch(wired) == ShadowBatch([pair], 3, 1)
    assert shadow_batch([]) == ShadowBatch([], 0, 0)
