"""recording media: post-processed files, transcripts, access log, retention

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from kokan.db import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(sa.Column("channels", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("processed_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("agent_id", sa.String(64), nullable=True))
        batch.add_column(
            sa.Column("legal_hold", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("deleted_at", UTCDateTime(), nullable=True))
    op.create_index("ix_recordings_agent_id", "recordings", ["agent_id"])
    op.create_index("ix_recordings_created_at", "recordings", ["created_at"])
    op.create_table(
        "recording_transcripts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "recording_id",
            sa.Integer(),
            sa.ForeignKey("recordings.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("words", sa.JSON(), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("recording_id"),
    )
    op.create_table(
        "recording_access_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("recording_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("byte_range", sa.String(128), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_recording_access_log_recording_id", "recording_access_log", ["recording_id"]
    )
    op.create_index("ix_recording_access_log_at", "recording_access_log", ["at"])


def downgrade() -> None:
    op.drop_index("ix_recording_access_log_at", table_name="recording_access_log")
    op.drop_index("ix_recording_access_log_recording_id", table_name="recording_access_log")
    op.drop_table("recording_access_log")
    op.drop_table("recording_transcripts")
    op.drop_index("ix_recordings_created_at", table_name="recordings")
    op.drop_index("ix_recordings_agent_id", table_name="recordings")
    with op.batch_alter_table("recordings") as batch:
        batch.drop_column("deleted_at")
        batch.drop_column("legal_hold")
        batch.drop_column("agent_id")
        batch.drop_column("processed_at")
        batch.drop_column("channels")
