"""Background jobs, the monitor's hourly rollups, and a note on releases.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create ``jobs``, ``decision_hours``, ``outcome_hours`` and ``rollup_marks``; add ``releases.note``.

    The rollups start empty with no watermark: the worker's first refresh counts the whole decision log once.
    """
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("experiment", sa.String(64), nullable=True),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(32), nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("fraction", sa.Float, nullable=False),
        sa.Column("log_tail", sa.JSON, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("hint", sa.Text, nullable=True),
        sa.Column("run_id", sa.Integer, nullable=True),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
    )
    op.create_index("ix_jobs_status", "jobs", ["status", "id"])
    op.create_table(
        "decision_hours",
        sa.Column("policy", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("arm", sa.String(128), primary_key=True),
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_table(
        "outcome_hours",
        sa.Column("experiment", sa.String(64), primary_key=True),
        sa.Column("metric", sa.String(64), primary_key=True),
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_table(
        "rollup_marks",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("last_id", sa.Integer, nullable=False),
        sa.Column("gap_since", sa.DateTime(timezone=True), nullable=True),
    )
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("note", sa.Text, nullable=True))


def downgrade() -> None:
    """Drop what :func:`upgrade` made."""
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("note")
    op.drop_table("rollup_marks")
    op.drop_table("outcome_hours")
    op.drop_table("decision_hours")
    op.drop_index("ix_jobs_status", table_name="jobs")
    op.drop_table("jobs")
