"""recordings: voicemails (and later calls) fetched from the provider into Kokan's storage

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from kokan.db import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recordings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "call_id",
            sa.Integer(),
            sa.ForeignKey("calls.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("provider_call_id", sa.String(64), nullable=True),
        sa.Column("provider_account_id", sa.String(64), nullable=True),
        sa.Column("provider_recording_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("storage_key", sa.String(128), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("content_type", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("stored_at", UTCDateTime(), nullable=True),
        sa.Column("provider_deleted_at", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("provider", "provider_recording_id"),
    )
    op.create_index("ix_recordings_call_id", "recordings", ["call_id"])
    op.create_index("ix_recordings_status", "recordings", ["status"])
    op.create_index("ix_recordings_provider_call_id", "recordings", ["provider_call_id"])


def downgrade() -> None:
    op.drop_index("ix_recordings_provider_call_id", table_name="recordings")
    op.drop_index("ix_recordings_status", table_name="recordings")
    op.drop_index("ix_recordings_call_id", table_name="recordings")
    op.drop_table("recordings")
