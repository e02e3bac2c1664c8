"""The first workspace schema: experiments, dataset versions, analyses, fits, policies and runs.

Revision ID: 0001
Revises:
Create Date: 2026-12-01

The tables that ``metadata.create_all`` made before the schema had migrations (pex/store.py at 059157e).
Written out here rather than taken from pex.store.schema, which follows the newest revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables of the first release."""
    op.create_table(
        "schema_info",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_table(
        "experiments",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("current_dataset", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("artifact", sa.String(512), nullable=False),
        sa.Column("n_units", sa.Integer, nullable=False),
        sa.Column("n_dropped", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("experiment", "version", name="uq_dataset_version"),
        sa.UniqueConstraint("experiment", "content_hash", name="uq_dataset_content"),
    )
    op.create_table(
        "analyses",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
        sa.Column("dataset_id", sa.String(32), sa.ForeignKey("dataset_versions.id"), nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "fits",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
        sa.Column("dataset_id", sa.String(32), sa.ForeignKey("dataset_versions.id"), nullable=False),
        sa.Column("learner", sa.String(16), nullable=False),
        sa.Column("artifact", sa.String(512), nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("fit_id", sa.String(48), sa.ForeignKey("fits.id"), nullable=True),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("evaluation", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_policy_version"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
        sa.Column("fit_id", sa.String(48), sa.ForeignKey("fits.id"), nullable=True),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    # what pex wrote before the schema had migrations (nothing reads it now)
    op.bulk_insert(sa.table("schema_info", sa.column("key", sa.String), sa.column("value", sa.String)),
                   [{"key": "schema_version", "value": "1"}])


def downgrade() -> None:
    """Drop every table of the first release."""
    for table in ("runs", "policies", "fits", "analyses", "dataset_versions", "experiments", "schema_info"):
        op.drop_table(table)
