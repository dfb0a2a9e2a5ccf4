"""published flow versions, the active version per flow, and their history

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from kokan.db import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flow_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("published_at", UTCDateTime(), nullable=False),
        sa.Column("published_by", sa.String(64), nullable=False),
        sa.UniqueConstraint("flow", "version"),
    )
    op.create_index("ix_flow_versions_flow", "flow_versions", ["flow"])
    op.create_table(
        "active_flows",
        sa.Column("flow", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.Column("changed_by", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["flow", "version"], ["flow_versions.flow", "flow_versions.version"]
        ),
    )
    op.create_table(
        "flow_activations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("by", sa.String(64), nullable=False),
    )
    op.create_index("ix_flow_activations_flow", "flow_activations", ["flow"])


def downgrade() -> None:
    op.drop_index("ix_flow_activations_flow", table_name="flow_activations")
    op.drop_table("flow_activations")
    op.drop_table("active_flows")
    op.drop_index("ix_flow_versions_flow", table_name="flow_versions")
    op.drop_table("flow_versions")
