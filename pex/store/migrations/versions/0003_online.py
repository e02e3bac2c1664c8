"""The online loop: the route of each logged decision, and the loops and rounds of online optimization.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``decisions.route`` (empty for the decisions logged before) and create the two online tables."""
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("route", sa.String(128), nullable=True))
    op.create_table(
        "online_loops",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
        sa.Column("policy", sa.String(128), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("ax_state", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "online_rounds",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("loop", sa.String(64), sa.ForeignKey("online_loops.name"), nullable=False),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("policy_version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("arms", sa.JSON, nullable=False),
        sa.Column("results", sa.JSON, nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("loop", "round", name="uq_online_round"),
    )


def downgrade() -> None:
    """Drop the online tables and the route column."""
    op.drop_table("online_rounds")
    op.drop_table("online_loops")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("route")
