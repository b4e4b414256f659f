"""Pairing blue's exchanges with green's copies by request id and input digest."""

from __future__ import annotations

from typing import Any

from bgserve.backends.exchange_pairing import ExchangePairer

BLUE, GREEN = 1, 2


def record(
    request_id: str,
    release: int,
    *,
    digest: str = "d",
    mirrored: bool = False,
    status: int = 200,
    answer: str = "",
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "mirrored": mirrored,
        "digest": digest,
        "request_body": f"request {request_id}",
        "answer_body": answer or f"answer {request_id} from {release}",
        "status": status,
        "ms": 5.0 if release == BLUE else 7.0,
        "truncated": False,
        "release_id": release,
    }


def test_blues_exchange_and_greens_copy_of_one_request_make_a_pair() -> None:
    pairer = ExchangePairer()
    batch = pairer.pair((BLUE, GREEN), [record("a", BLUE)], [record("a", GREEN)], now=0)
    (pair,) = batch.pairs
    assert (pair.request_id, pair.request_body) == ("a", "request a")
    assert (pair.blue_body, pair.green_body) == ("answer a from 1", "answer a from 2")
    assert (pair.blue_ms, pair.green_ms) == (5.0, 7.0)
    assert (pair.blue_release, pair.green_release) == (BLUE, GREEN)
    assert (batch.dropped, batch.green_errors) == (0, 0)


def test_halves_drained_at_different_times_still_pair_within_the_wait() -> None:
    pairer = ExchangePairer(wait=10)
    assert pairer.pair((BLUE, GREEN), [record("a", BLUE), record("b", BLUE)], [], 0).pairs == []
    batch = pairer.pair((BLUE, GREEN), [], [record("a", GREEN)], now=5)
    assert [p.request_id for p in batch.pairs] == ["a"]
    # b's copy comes after the wait: b was forgotten, uncounted (most requests have none).
    late = pairer.pair((BLUE, GREEN), [], [record("b", GREEN)], now=11)
    assert (late.pairs, late.dropped) == ([], 0)


def test_one_request_id_over_different_inputs_is_not_a_pair() -> None:
    pairer = ExchangePairer()
    batch = pairer.pair(
        (BLUE, GREEN), [record("a", BLUE, digest="x")], [record("a", GREEN, digest="y")], 0
    )
    assert (batch.pairs, batch.dropped) == ([], 1)


def test_a_request_id_green_answered_twice_is_not_paired() -> None:
    # At a weight above 0 green may answer request a live and as the copy of it.
    pairer = ExchangePairer()
    greens = [record("a", GREEN), record("a", GREEN, mirrored=True)]
    assert pairer.pair((BLUE, GREEN), [record("a", BLUE)], greens, 0).pairs == []


def test_a_copy_green_failed_is_a_pair_with_greens_error() -> None:
    pairer = ExchangePairer()
    batch = pairer.pair(
        (BLUE, GREEN), [record("a", BLUE)], [record("a", GREEN, status=503, answer="down")], 0
    )
    (pair,) = batch.pairs
    assert (pair.green_body, pair.green_error, pair.green_ms) == (
        None,
        "green answered HTTP 503",
        None,
    )
    assert batch.green_errors == 1


def test_other_releases_copies_sent_to_blue_and_unread_records_are_handled() -> None:
    pairer = ExchangePairer()
    batch = pairer.pair(
        (BLUE, GREEN),
        [record("a", BLUE, mirrored=True), record("b", 9)],
        [record("a", GREEN), record("b", GREEN)],
        0,
        unread=3,
    )
    assert (batch.pairs, batch.dropped) == ([], 3)


def test_a_new_blue_and_green_start_afresh() -> None:
    pairer = ExchangePairer()
    pairer.pair((BLUE, GREEN), [record("a", BLUE)], [], 0)
    assert pairer.pair((BLUE, 3), [], [record("a", 3)], 1).pairs == []


def test_waiting_records_are_bounded() -> None:
    pairer = ExchangePairer(wait=100, capacity=2)
    pairer.pair((BLUE, GREEN), [record(n, BLUE) for n in "abc"], [], 0)
    batch = pairer.pair((BLUE, GREEN), [], [record(n, GREEN) for n in "abc"], 1)
    assert sorted(p.request_id for p in batch.pairs) == ["b", "c"]


def test_waiting_records_are_bounded_by_bytes_too() -> None:
    pairer = ExchangePairer(wait=100, max_bytes=3000)
    big = [{**record(n, BLUE), "request_body": "x" * 1000} for n in "abc"]
    pairer.pair((BLUE, GREEN), big, [], 0)
    assert list(pairer.live.waiting) == ["b", "c"]
    assert pairer.live.held <= 3000
    batch = pairer.pair((BLUE, GREEN), [], [record(n, GREEN) for n in "bc"], 1)
    assert sorted(p.request_id for p in batch.pairs) == ["b", "c"]
    assert pairer.live.held == 0
