"""Baseline: releases, deployments and events as bgserve created them before migrations.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the three tables and their indexes."""
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("prompt_name", sa.String(256), nullable=False),
        sa.Column("prompt_version", sa.Integer(), nullable=False),
        sa.Column("bundle_name", sa.String(256), nullable=False),
        sa.Column("bundle_version", sa.Integer(), nullable=False),
        sa.Column("model_ref", sa.String(600), nullable=False),
        sa.Column("prompt_ref", sa.String(600), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_releases_name", "releases", ["name"])
    op.create_table(
        "deployments",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("blue", sa.Integer(), sa.ForeignKey("releases.id"), nullable=False),
        sa.Column("green", sa.Integer(), sa.ForeignKey("releases.id")),
        sa.Column("green_weight", sa.Integer(), nullable=False),
        sa.Column("standby", sa.Integer(), sa.ForeignKey("releases.id")),
        sa.Column("reverted", sa.Boolean(), nullable=False),
        sa.Column("gate", sa.JSON()),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("last_comparison", sa.JSON()),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("deployment", sa.String(63), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("principal", sa.String(128), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("weights_before", sa.JSON()),
        sa.Column("weights_after", sa.JSON()),
        sa.Column("details", sa.JSON()),
    )
    op.create_index("ix_events_deployment", "events", ["deployment"])


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_table("events")
    op.drop_table("deployments")
    op.drop_index("ix_releases_name", table_name="releases")
    op.drop_table("releases")
