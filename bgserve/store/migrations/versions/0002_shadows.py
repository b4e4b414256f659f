"""Shadow traffic's configuration and report, kept with the deployment.

Revision ID: 0002
Revises: 0001
Create Date: 2026-02-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the shadows table."""
    op.create_table(
        "shadows",
        sa.Column("deployment", sa.String(63), sa.ForeignKey("deployments.name"), primary_key=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON()),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop the shadows table."""
    op.drop_table("shadows")
