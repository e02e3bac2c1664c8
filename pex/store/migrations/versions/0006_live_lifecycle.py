"""Live lifecycle: staged rollouts, stored monitor reports, figures on releases, fallback decisions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``rollouts`` and ``monitor_reports``; add ``releases.details`` and ``decisions.fallback``.

    Both new columns are nullable, so existing rows need no rewrite (an ADD COLUMN on SQLite and PostgreSQL).
    """
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("policy", sa.String(128), nullable=False),
        sa.Column("experiment", sa.String(64), nullable=True),
        sa.Column("new_version", sa.Integer, nullable=False),
        sa.Column("base_version", sa.Integer, nullable=True),
        sa.Column("routing_key", sa.String(32), nullable=False),
        sa.Column("holdout", sa.Float, nullable=False),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("versions", sa.JSON, nullable=False),
        sa.Column("last_check", sa.JSON, nullable=True),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_rollouts_policy", "rollouts", ["policy", "id"])
    op.create_table(
        "monitor_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("policy", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("experiment", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
    )
    op.create_index("ix_monitor_reports_policy", "monitor_reports", ["policy", "id"])
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("details", sa.JSON, nullable=True))
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("fallback", sa.Boolean, nullable=True))


def downgrade() -> None:
    """Drop what :func:`upgrade` made."""
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("fallback")
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("details")
    op.drop_index("ix_monitor_reports_policy", table_name="monitor_reports")
    op.drop_table("monitor_reports")
    op.drop_index("ix_rollouts_policy", table_name="rollouts")
    op.drop_table("rollouts")
