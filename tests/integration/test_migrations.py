"""Schema migrations: a fresh database, a database of the release before migrations, and
``bgserve db``, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from bgserve.cli.db import db_app
from bgserve.domain import rollout
from bgserve.domain.rollout import Gate
from bgserve.errors import Unavailable
from bgserve.store import Store
from bgserve.store.migrate import BASELINE, VERSION_TABLE, head_revision
from bgserve.store.tables import metadata

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# The DDL ``metadata.create_all`` issued in the release before migrations, verbatim.
_LEGACY_TABLES = """
CREATE TABLE releases (
    id {serial} NOT NULL,
    name VARCHAR(63) NOT NULL,
    model_name VARCHAR(256) NOT NULL,
    model_version INTEGER NOT NULL,
    prompt_name VARCHAR(256) NOT NULL,
    prompt_version INTEGER NOT NULL,
    bundle_name VARCHAR(256) NOT NULL,
    bundle_version INTEGER NOT NULL,
    model_ref VARCHAR(600) NOT NULL,
    prompt_ref VARCHAR(600) NOT NULL,
    created_at {datetime} NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX ix_releases_name ON releases (name);
CREATE TABLE events (
    id {serial} NOT NULL,
    deployment VARCHAR(63) NOT NULL,
    at {datetime} NOT NULL,
    principal VARCHAR(128) NOT NULL,
    action VARCHAR(32) NOT NULL,
    reason TEXT NOT NULL,
    weights_before JSON,
    weights_after JSON,
    details JSON,
    PRIMARY KEY (id)
);
CREATE INDEX ix_events_deployment ON events (deployment);
CREATE TABLE deployments (
    name VARCHAR(63) NOT NULL,
    blue INTEGER NOT NULL,
    green INTEGER,
    green_weight INTEGER NOT NULL,
    standby INTEGER,
    reverted BOOLEAN NOT NULL,
    gate JSON,
    "plan" JSON NOT NULL,
    last_comparison JSON,
    version INTEGER NOT NULL,
    created_at {datetime} NOT NULL,
    updated_at {datetime} NOT NULL,
    PRIMARY KEY (name),
    FOREIGN KEY(blue) REFERENCES releases (id),
    FOREIGN KEY(green) REFERENCES releases (id),
    FOREIGN KEY(standby) REFERENCES releases (id)
)
"""
LEGACY_DDL = {
    "sqlite": _LEGACY_TABLES.format(serial="INTEGER", datetime="DATETIME"),
    "postgresql": _LEGACY_TABLES.format(serial="SERIAL", datetime="TIMESTAMP WITH TIME ZONE"),
}
# How that release wrote a timestamp: SQLAlchemy's SQLite format (no zone), or a timestamptz.
LEGACY_NOW = {"sqlite": "'2026-01-02 03:04:05.000000'", "postgresql": "'2026-01-02 03:04:05+00'"}
LEGACY_ROWS = """
INSERT INTO releases VALUES (1, 'r1', 'm', 3, 'p', 2, 'bgserve.r1', 1,
    'models:/m@live', 'prompts:/p/2', {now});
INSERT INTO releases VALUES (2, 'r2', 'm', 4, 'p', 2, 'bgserve.r2', 1,
    'models:/m/4', 'prompts:/p/2', {now});
INSERT INTO deployments VALUES ('chat', 1, 2, 30, NULL, {false},
    '{{"blue": 1, "green": 2, "passed": true, "reasons": ["ok"]}}', '[50, 100]', 'null', 3,
    {now}, {now});
INSERT INTO events (deployment, at, principal, action, reason, weights_before, weights_after,
    details) VALUES ('chat', {now}, 'alice', 'shift', 'step', '{{"1": 100, "2": 0}}',
    '{{"1": 70, "2": 30}}', '{{"force": false}}')
"""


def run_sql(url: str, script: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in script.split(";"):
            conn.exec_driver_sql(statement)
    engine.dispose()


def make_legacy_database(url: str) -> None:
    """A database exactly as the release before migrations left it, with one of everything."""
    dialect = url.split(":")[0].split("+")[0]
    run_sql(url, LEGACY_DDL[dialect])
    false = "0" if dialect == "sqlite" else "false"
    run_sql(url, LEGACY_ROWS.format(now=LEGACY_NOW[dialect], false=false))


def versions(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


def schema_drift(store: Store) -> list[object]:
    """What differs between the migrated database and the tables the code uses."""
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
        )
        return list(compare_metadata(context, metadata))


def test_fresh_database_is_built_by_migrations_to_what_the_code_uses(state_url: str) -> None:
    store = Store(state_url)
    assert versions(store) == [head_revision()]
    assert schema_drift(store) == []
    tables = inspect(store.engine)
    assert {"releases", "deployments", "events", VERSION_TABLE} <= set(tables.get_table_names())
    assert {fk["referred_table"] for fk in tables.get_foreign_keys("deployments")} == {"releases"}
    store.close()


def test_database_of_the_release_before_migrations_upgrades_in_place(state_url: str) -> None:
    make_legacy_database(state_url)
    store = Store(state_url)
    assert versions(store) == [head_revision()]
    assert schema_drift(store) == []
    release = store.get_release(1)
    assert (release.name, release.model_uri, release.model_ref) == (
        "r1",
        "models:/m/3",
        "models:/m@live",
    )
    assert release.created_at == NOW
    stored = store.get_deployment("chat")
    assert stored.state.green_weight == 30 and stored.state.version == 3
    assert stored.state.gate == Gate(1, 2, True, ("ok",))
    # The previous release stored a plan as its remaining steps: it reads as a plan of them.
    assert stored.state.plan is not None and stored.state.plan.steps == (50, 100)
    [event] = store.history("chat")
    assert (event.principal, event.weights_after, event.details) == (
        "alice",
        {"1": 70, "2": 30},
        {"force": False},
    )
    # It keeps working: ids continue after the old rows, versions after the old version.
    reverted = rollout.revert(stored.state).state
    saved = store.save_deployment(
        stored.state, reverted, now=NOW, principal="bob", action="revert", reason=""
    )
    assert saved.state.version == 4 and [e.id for e in store.history("chat")] == [1, 2]
    store.close()


def test_opening_again_changes_nothing(state_url: str) -> None:
    make_legacy_database(state_url)
    Store(state_url).close()
    store = Store(state_url)
    assert versions(store) == [head_revision()]
    assert store.get_deployment("chat").state.version == 3
    assert len(store.list_releases()) == 2
    store.close()


def test_concurrent_first_starts_migrate_once(state_url: str) -> None:
    url = state_url
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def open_store() -> None:
        start.wait(30)
        try:
            Store(url).close()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a start hangs"
    assert failures == []
    store = Store(url)
    assert versions(store) == [head_revision()]
    store.close()


def test_database_from_a_newer_bgserve_is_refused(state_url: str) -> None:
    Store(state_url).close()
    run_sql(state_url, f"UPDATE {VERSION_TABLE} SET version_num = 'f00d'")
    with pytest.raises(Unavailable, match="schema revision this bgserve does not know"):
        Store(state_url)


def test_foreign_tables_are_not_mistaken_for_ours(state_url: str) -> None:
    run_sql(state_url, "CREATE TABLE releases (id INTEGER PRIMARY KEY)")
    with pytest.raises(Unavailable, match=r"has the tables \['releases'\] but not"):
        Store(state_url)


def test_alembic_default_version_table_of_another_tool_is_left_alone(state_url: str) -> None:
    # MLflow keeps its own schema version in ``alembic_version``, maybe in the same database.
    run_sql(
        state_url,
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL);"
        "INSERT INTO alembic_version VALUES ('mlflow-head')",
    )
    store = Store(state_url)
    assert versions(store) == [head_revision()]
    with store.engine.connect() as conn:
        assert (
            conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "mlflow-head"
        )
    store.close()


def test_db_current_and_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    make_legacy_database(url)
    runner = CliRunner()
    current = runner.invoke(db_app, ["current", "--state-url", url])
    assert current.exit_code == 0 and "schema revision none" in current.stdout
    assert "run bgserve db upgrade" in current.stdout
    upgraded = runner.invoke(db_app, ["upgrade", "--state-url", url])
    assert upgraded.exit_code == 0, upgraded.output
    assert f"upgraded from pre-migration to schema revision {head_revision()}" in upgraded.stdout
    again = runner.invoke(db_app, ["upgrade", "--state-url", url])
    assert f"already at schema revision {head_revision()}" in again.stdout
    current = runner.invoke(db_app, ["current", "--state-url", url])
    assert f"schema revision {head_revision()}, up to date" in current.stdout
    assert head_revision() >= BASELINE


def test_db_reads_the_state_url_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BGSERVE_HOME", str(tmp_path))
    monkeypatch.delenv("BGSERVE_STATE_URL", raising=False)
    result = CliRunner().invoke(db_app, ["upgrade"])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "state.db") in result.stdout.replace("\n", "")
    assert (tmp_path / "state.db").exists()


def test_db_names_an_unreachable_database_and_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(db_app, ["current", "--state-url", f"sqlite:///{tmp_path}"])
    assert result.exit_code == 1
    assert "cannot open the state database" in result.stderr
