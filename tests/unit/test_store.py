"""The state database: releases, versioned deployments, append-only history.

Every test runs on SQLite and on a real PostgreSQL server (skipped outside CI when
PostgreSQL is not installed), and every refusal or failure of the database is
provoked for real and must come out as a bgserve error naming what went wrong.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from bgserve.domain import promotion, rollout
from bgserve.domain.analysis import AnalysisSettings
from bgserve.domain.plan import make_plan
from bgserve.domain.release import ResolvedRelease
from bgserve.domain.rollout import Gate
from bgserve.errors import Conflict, InvalidInput, NotFound, StaleWrite, Unavailable
from bgserve.store import Store
from tests.support.postgres import PostgresServer

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def add(store: Store, n: int, name: str | None = None) -> None:
    resolved = ResolvedRelease("m", n, "p", n, "bgserve.r", n)
    store.add_release(name or f"r{n}", resolved, f"models:/m/{n}", "prompts:/p@live", NOW)


@pytest.fixture
def store(state_url: str) -> Iterator[Store]:
    store = Store(state_url)
    for n in (1, 2):
        add(store, n)
    yield store
    store.close()


def test_release_round_trip_keeps_fixed_versions_and_request(store: Store) -> None:
    release = store.get_release(2)
    assert (release.model_uri, release.prompt_uri, release.bundle_uri) == (
        "models:/m/2",
        "prompts:/p/2",
        "models:/bgserve.r/2",
    )
    assert release.prompt_ref == "prompts:/p@live" and release.created_at == NOW
    assert [r.name for r in store.list_releases()] == ["r1", "r2"]
    with pytest.raises(NotFound, match="release 9 does not exist"):
        store.get_release(9)


def test_save_bumps_version_and_logs_weights(store: Store) -> None:
    created = store.create_deployment(rollout.create("chat", 1).state, NOW, "alice", "born")
    staged = rollout.stage_green(created.state, 2).state
    saved = store.save_deployment(
        created.state, staged, now=NOW, principal="bob", action="stage", reason="r"
    )
    shifted = rollout.shift(replace(saved.state, gate=Gate(1, 2, True)), 30).state
    final = store.save_deployment(
        saved.state,
        shifted,
        now=NOW,
        principal="carol",
        action="shift",
        reason="s",
        details={"force": True},
        last_comparison={"passed": True},
    )
    assert final.state.version == 3 and final.state.green_weight == 30
    assert final.state.gate == Gate(1, 2, True) and final.last_comparison == {"passed": True}
    events = store.history("chat")
    assert [(e.principal, e.action) for e in events] == [
        ("alice", "create"),
        ("bob", "stage"),
        ("carol", "shift"),
    ]
    assert events[2].weights_before == {"1": 100, "2": 0}
    assert events[2].weights_after == {"1": 70, "2": 30}
    assert events[2].details == {"force": True} and events[2].at == NOW


def test_stale_write_is_refused_and_changes_nothing(store: Store) -> None:
    created = store.create_deployment(rollout.create("chat", 1).state, NOW, "a", "")
    staged = rollout.stage_green(created.state, 2).state
    store.save_deployment(created.state, staged, now=NOW, principal="a", action="stage", reason="")
    with pytest.raises(StaleWrite, match="changed by another operation") as caught:
        store.save_deployment(
            created.state, staged, now=NOW, principal="b", action="stage", reason=""
        )
    assert caught.value.hint == "retry"
    assert store.get_deployment("chat").state.version == 2
    assert len(store.history("chat")) == 2


def test_duplicate_deployment_is_a_conflict_naming_it(store: Store) -> None:
    store.create_deployment(rollout.create("chat", 1).state, NOW, "a", "")
    with pytest.raises(Conflict, match="deployment 'chat' already exists") as caught:
        store.create_deployment(rollout.create("chat", 2).state, NOW, "a", "")
    assert caught.value.hint == "other-name"
    assert store.get_deployment("chat").state.blue == 1
    assert len(store.history("chat")) == 1


def test_deployment_of_a_missing_release_is_not_found_and_not_stored(store: Store) -> None:
    with pytest.raises(NotFound, match="release 99 does not exist: deployment 'chat'"):
        store.create_deployment(rollout.create("chat", 99).state, NOW, "a", "")
    assert store.list_deployments() == []


def test_staging_a_missing_release_is_not_found_and_changes_nothing(store: Store) -> None:
    created = store.create_deployment(rollout.create("chat", 1).state, NOW, "a", "")
    staged = rollout.stage_green(created.state, 99).state
    with pytest.raises(NotFound, match="release 99 does not exist") as caught:
        store.save_deployment(
            created.state, staged, now=NOW, principal="a", action="stage", reason=""
        )
    assert caught.value.details == {"release_id": 99}
    assert store.get_deployment("chat").state == created.state
    assert len(store.history("chat")) == 1


def test_a_failing_database_is_unavailable(store: Store) -> None:
    created = store.create_deployment(rollout.create("chat", 1).state, NOW, "a", "")
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE events"))
    with pytest.raises(Unavailable, match=r"the state database failed: .*events") as caught:
        store.history("chat")
    assert caught.value.hint == "retry"
    staged = rollout.stage_green(created.state, 2).state
    with pytest.raises(Unavailable, match="the state database failed"):
        store.save_deployment(
            created.state, staged, now=NOW, principal="a", action="stage", reason=""
        )
    # The state write and its event are one transaction: without the event, no state change.
    assert store.get_deployment("chat").state.version == 1


def test_state_survives_reopening(state_url: str, store: Store) -> None:
    created = store.create_deployment(rollout.create("chat", 1).state, NOW, "a", "")
    staged = rollout.stage_green(created.state, 2).state
    plan = make_plan([50, 100], 30.0, AnalysisSettings(), force=True)
    planned = promotion.start(staged, plan, now=5.0).state
    store.save_deployment(created.state, planned, now=NOW, principal="a", action="plan", reason="")
    store.close()
    reopened = Store(state_url)
    stored = reopened.get_deployment("chat")
    reopened.close()
    assert stored.state.plan == planned.plan and stored.state.green == 2
    assert stored.state.plan is not None and stored.state.plan.step_started_at == 5.0
    assert stored.updated_at == NOW


def test_unreachable_server_is_unavailable_without_its_password() -> None:
    import psycopg  # noqa: F401  (a dev dependency: its absence is an error, not a skip)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on ``port`` once the socket is closed.
    url = f"postgresql+psycopg://bgserve:s3cret@127.0.0.1:{port}/state"
    with pytest.raises(Unavailable, match="cannot open the state database") as caught:
        Store(url)
    assert "s3cret" not in caught.value.message and "127.0.0.1" in caught.value.message


def test_unopenable_sqlite_file_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="cannot open the state database"):
        Store(f"sqlite:///{tmp_path}")  # a directory, not a file
    (tmp_path / "file").write_text("")
    with pytest.raises(Unavailable, match="cannot create the directory"):
        Store(f"sqlite:///{tmp_path / 'file' / 'state.db'}")


def test_malformed_url_is_invalid_input_naming_the_setting() -> None:
    with pytest.raises(InvalidInput, match="not a SQLAlchemy URL") as caught:
        Store("state.db")
    assert caught.value.field == "state_url"
    with pytest.raises(InvalidInput, match="driver that is not installed") as caught:
        Store("postgresql+nosuchdriver://localhost/x")
    assert caught.value.field == "state_url"


def test_postgres_release_refusals_name_the_release(pg: PostgresServer) -> None:
    store = Store(pg.new_database())
    # A row inserted by hand (a restored dump) leaves the id sequence behind: the
    # next release gets an id that is taken.
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO releases (id, name, model_name, model_version, prompt_name,"
                " prompt_version, bundle_name, bundle_version, model_ref, prompt_ref, created_at)"
                " VALUES (1, 'restored', 'm', 1, 'p', 1, 'b', 1, 'models:/m/1', 'prompts:/p/1',"
                " now())"
            )
        )
    with pytest.raises(Conflict, match=r"release 'r1' was not stored: .*duplicate"):
        add(store, 1)
    add(store, 2)  # the sequence moved on: the next one fits
    with pytest.raises(InvalidInput, match="too long"):
        add(store, 3, name="x" * 64)
    assert [r.name for r in store.list_releases()] == ["restored", "r2"]
    store.close()
