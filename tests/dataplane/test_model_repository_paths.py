"""The slot's model repository API against bytes routing cannot match and bodies ``json``
cannot parse: bgserve's own 400, never kserve's handler or a 500. One real slot process."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.dataplane.test_model_repository import RepositorySlot
from tests.support.models import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RepositorySlot]:
    root = tmp_path_factory.mktemp("repository") / "models"
    proc = RepositorySlot(root, tmp_path_factory.mktemp("logs") / "slot.log")
    try:
        wait_until(proc.live, 90, "the repository slot to be live")
        yield proc
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/v2/repository/models/x%0a/load", "not a folder name"),
        ("/v2/repository/models/x%0A/unload", "not a folder name"),
        ("/v2/repository/models/%0ax/load", "not a folder name"),
        ("/v2/repository/models/x/load%0a", "control character"),
    ],
    ids=["load", "unload", "leading", "after-the-verb"],
)
def test_a_newline_in_the_path_gets_bgserves_refusal(
    slot: RepositorySlot, path: str, says: str
) -> None:
    code, body = slot.raw_post(path)
    assert code == 400, body
    assert says in body and "error" in body


def test_a_deeply_nested_body_is_a_400_naming_the_shape(slot: RepositorySlot) -> None:
    for body in (b"[" * 60_000, b'{"a":' * 12_000):
        response = slot.post("/v2/repository/index", body)
        assert response.status_code == 400, response.text
        assert "nests too deeply" in response.json()["error"]
        assert "RecursionError" not in response.text
    assert slot.post("/v2/repository/index").status_code == 200


def test_the_slot_still_answers_plain_names(slot: RepositorySlot) -> None:
    response = slot.post("/v2/repository/models/ghost_1/load")
    assert response.status_code == 404
    assert httpx.get(f"{slot.url}/v2/health/live").status_code == 200
