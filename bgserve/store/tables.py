"""The state database's tables (SQLAlchemy Core).

This is the schema the code reads and writes; the migrations under
:mod:`bgserve.store.migrations` build it. A change here needs a new migration
revision, and ``tests/test_migrations.py`` fails until the two agree.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

releases = Table(
    "releases",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(63), nullable=False, index=True),
    Column("model_name", String(256), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("prompt_name", String(256), nullable=False),
    Column("prompt_version", Integer, nullable=False),
    Column("bundle_name", String(256), nullable=False),
    Column("bundle_version", Integer, nullable=False),
    Column("model_ref", String(600), nullable=False),
    Column("prompt_ref", String(600), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

deployments = Table(
    "deployments",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("blue", Integer, ForeignKey("releases.id"), nullable=False),
    Column("green", Integer, ForeignKey("releases.id")),
    Column("green_weight", Integer, nullable=False, default=0),
    Column("standby", Integer, ForeignKey("releases.id")),
    Column("reverted", Boolean, nullable=False, default=False),
    Column("gate", JSON),
    Column("plan", JSON, nullable=False, default=list),
    Column("last_comparison", JSON),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deployment", String(63), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("principal", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("weights_before", JSON),
    Column("weights_after", JSON),
    Column("details", JSON),
)

shadows = Table(
    "shadows",
    metadata,
    Column("deployment", String(63), ForeignKey("deployments.name"), primary_key=True),
    Column("config", JSON, nullable=False),
    Column("report", JSON),
    Column("revision", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
"""One deployment's shadow traffic: its configuration (``revision`` counts its changes)
and the report so far, so a restart or a new leader resumes it."""

follow_rules = Table(
    "follow_rules",
    metadata,
    Column("deployment", String(63), ForeignKey("deployments.name"), primary_key=True),
    Column("rule", JSON, nullable=False),
    Column("progress", JSON, nullable=False),
    Column("trigger", JSON),
    Column("pending_seq", Integer, nullable=False),
    Column("handled_seq", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
"""One deployment's follow rule (the MLflow aliases it follows), what it has done so far,
and its last trigger: ``pending_seq`` counts triggers, ``handled_seq`` the last one a
handling of the rule settled."""

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("delivery_id", String(128), primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
)
"""The MLflow webhook deliveries accepted lately (for as long as their timestamps pass),
so a replayed delivery is refused, on every replica and after a restart."""
