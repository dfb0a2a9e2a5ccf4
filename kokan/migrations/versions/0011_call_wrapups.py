"""wrap-up codes: what the agent said each call was

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from kokan.db import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "call_wrapups",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("call_id", sa.String(128), nullable=False, unique=True),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("by", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_call_wrapups_code", "call_wrapups", ["code"])


def downgrade() -> None:
    op.drop_index("ix_call_wrapups_code", table_name="call_wrapups")
    op.drop_table("call_wrapups")
