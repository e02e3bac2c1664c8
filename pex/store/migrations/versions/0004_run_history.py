"""Run history: each `pex run`'s dataset version, settings, reason and recommended policy version.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the history columns to ``runs``. Runs recorded before have none (empty columns): they are not part of any
    dataset version's history, because their split came from their seed."""
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("dataset_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("settings", sa.JSON, nullable=True))
        batch.add_column(sa.Column("reason", sa.Text, nullable=True))
        batch.add_column(sa.Column("policy", sa.String(128), nullable=True))
        batch.add_column(sa.Column("policy_version", sa.Integer, nullable=True))
        batch.add_column(sa.Column("own_policy", sa.String(128), nullable=True))
        batch.add_column(sa.Column("own_version", sa.Integer, nullable=True))
        batch.add_column(sa.Column("bound_to", sa.Integer, nullable=True))
    op.create_index("ix_runs_dataset", "runs", ["experiment", "dataset_id"])


def downgrade() -> None:
    """Drop the history columns."""
    op.drop_index("ix_runs_dataset", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        for column in ("bound_to", "own_version", "own_policy", "policy_version", "policy", "reason", "settings", "dataset_id"):
            batch.drop_column(column)
