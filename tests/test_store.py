"""The state database: releases, versioned deployments, append-only history."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bgserve.domain import rollout
from bgserve.domain.release import ResolvedRelease
from bgserve.domain.rollout import Gate
from bgserve.errors import Conflict, NotFound, StaleWrite
from bgserve.store import Store

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    for n in (1, 2):
        store.add_release(
            f"r{n}",
            ResolvedRelease("m", n, "p", n, "bgserve.r", n),
            f"models:/m/{n}",
            "prompts:/p@live",
            NOW,
        )
    return store


def test_release_round_trip_keeps_fixed_versions_and_request(store: Store) -> None:
    release = store.get_release(2)
    assert (release.model_uri, release.prompt_uri, release.bundle_uri) == (
        "models:/m/2",
        "prompts:/p/2",
        "models:/bgserve.r/2",
    )
    assert release.prompt_ref == "prompts:/p@live" and release.created_at == NOW
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
    )
    assert final.state.version == 3 and final.state.green_weight == 30
    assert final.state.gate == Gate(1, 2, True)
    events = store.history("chat")
    assert [(e.principal, e.action) for e in events] == [
        ("alice", "create"),
        ("bob", "stage"),
        ("carol", "shift"),
    ]
    assert events[2].weights_before == {"1": 100, "2": 0}
    assert events[2].weights_after == {"1": 70, "2": 30}
    assert events[2].details == {"force": True}


def test_stale_write_is_refused_and_changes_nothing(store: Store) -> None:
    created = store.create_deployment(rollout.create("chat", 1).state, NOW, "a", "")
    staged = rollout.stage_green(created.state, 2).state
    store.save_deployment(created.state, staged, now=NOW, principal="a", action="stage", reason="")
    with pytest.raises(StaleWrite, match="changed by another operation"):
        store.save_deployment(
            created.state, staged, now=NOW, principal="b", action="stage", reason=""
        )
    assert store.get_deployment("chat").state.version == 2
    assert len(store.history("chat")) == 2


def test_duplicate_deployment_is_a_conflict(store: Store) -> None:
    store.create_deployment(rollout.create("chat", 1).state, NOW, "a", "")
    with pytest.raises(Conflict, match="already exists"):
        store.create_deployment(rollout.create("chat", 2).state, NOW, "a", "")


def test_state_survives_reopening(tmp_path: Path, store: Store) -> None:
    created = store.create_deployment(rollout.create("chat", 1).state, NOW, "a", "")
    plan = rollout.start_plan(
        rollout.stage_green(created.state, 2).state, [50, 100], force=True
    ).state
    store.save_deployment(created.state, plan, now=NOW, principal="a", action="plan", reason="")
    store.close()
    reopened = Store(f"sqlite:///{tmp_path / 'state.db'}").get_deployment("chat")
    assert reopened.state.plan == (50, 100) and reopened.state.green == 2
    assert reopened.updated_at == NOW
