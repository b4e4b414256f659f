"""One ``serve`` per local state: a second one refuses to start and names the first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bgserve.compose.election import build_lease
from bgserve.errors import Conflict, InvalidInput
from bgserve.settings import Settings
from bgserve.store.serve_claim import claim_state
from tests.support.postgres import PostgresServer
from tests.support.processes import free_port, start_serve


def test_a_sqlite_state_is_claimed_once_until_released(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    first = claim_state(url, "pid 1 on here, control API 127.0.0.1:8080")
    with pytest.raises(Conflict) as refused:
        claim_state(url, "pid 2 on here, control API 127.0.0.1:9090")
    assert "pid 1 on here, control API 127.0.0.1:8080" in refused.value.message
    assert "BGSERVE_HOME" in refused.value.message
    first.release()
    claim_state(url, "pid 2").release()  # free again once released


def test_an_in_memory_state_needs_no_claim() -> None:
    claim_state("sqlite://", "a").release()
    claim_state("sqlite:///:memory:", "b").release()


@pytest.mark.integration
def test_a_postgres_state_is_claimed_once_naming_the_holder(pg: PostgresServer) -> None:
    url = pg.new_database()
    first = claim_state(url, "pid 1 on node-a, control API 0.0.0.0:8080")
    try:
        with pytest.raises(Conflict) as refused:
            claim_state(url, "pid 2 on node-b")
        assert "pid 1 on node-a" in refused.value.message
        assert "s3cret" not in str(refused.value.details)
    finally:
        first.release()
    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)  # as operators publish it
    second = claim_state(plain, "pid 2 on node-b")
    try:
        with pytest.raises(Conflict, match="pid 2 on node-b"):
            claim_state(url, "pid 3")
    finally:
        second.release()


def test_leader_election_cannot_be_turned_on_for_the_local_backend(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="local backend runs as one process") as refused:
        build_lease(Settings(home=tmp_path, leader_election="lease"))
    assert refused.value.field == "leader_election"


def test_postgres_leader_election_needs_a_postgres_state(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, backend="memory", leader_election="postgres")
    with pytest.raises(InvalidInput, match="PostgreSQL BGSERVE_STATE_URL"):
        build_lease(settings)


@pytest.mark.integration
def test_a_second_serve_on_the_same_state_refuses_to_start_naming_the_first(
    tmp_path: Path, mlflow_store: str
) -> None:
    url, first = start_serve(tmp_path, mlflow_store)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "bgserve", "serve", "--port", str(free_port())],
            env={**os.environ, "BGSERVE_HOME": str(tmp_path), "BGSERVE_DATA_PORT": "0"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert f"pid {first.pid} on" in second.stderr
        assert f"control API 127.0.0.1:{url.rsplit(':', 1)[1]}" in second.stderr
        assert first.poll() is None, "the first serve keeps running"
    finally:
        first.terminate()
        first.wait(30)
    _, again = start_serve(tmp_path, mlflow_store)  # the claim ends with its process
    again.terminate()
    again.wait(30)
