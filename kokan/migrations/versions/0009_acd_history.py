"""ACD history: queue calls and agent states copied out of the ACD's event stream for the KPIs

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from kokan.db import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "acd_calls",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("call_id", sa.String(128), nullable=False, unique=True),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("entry_queue", sa.String(64), nullable=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("customer", sa.String(64), nullable=True),
        sa.Column("joined_at", UTCDateTime(), nullable=False),
        sa.Column("first_offered_at", UTCDateTime(), nullable=True),
        sa.Column("answered_at", UTCDateTime(), nullable=True),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("overflowed_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("abandoned_at", UTCDateTime(), nullable=True),
        sa.Column("result", sa.String(16), nullable=True),
        sa.Column("wait_seconds", sa.Float(), nullable=True),
        sa.Column("talk_seconds", sa.Float(), nullable=False),
        sa.Column("hold_seconds", sa.Float(), nullable=False),
        sa.Column("wrapup_started_at", UTCDateTime(), nullable=True),
        sa.Column("wrapup_event_key", sa.String(32), nullable=True),
        sa.Column("wrapup_ended_at", UTCDateTime(), nullable=True),
        sa.Column("wrapup_seconds", sa.Float(), nullable=False),
    )
    op.create_index("ix_acd_calls_joined_at", "acd_calls", ["joined_at"])
    op.create_index("ix_acd_calls_agent_wrapup", "acd_calls", ["agent_id", "wrapup_ended_at"])
    op.create_index("ix_acd_calls_customer", "acd_calls", ["customer"])
    op.create_table(
        "acd_agent_states",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("event_key", sa.String(32), nullable=False, unique=True),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("presence", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_acd_agent_states_agent_key", "acd_agent_states", ["agent_id", "event_key"])
    op.create_index("ix_acd_agent_states_started_at", "acd_agent_states", ["started_at"])


def downgrade() -> None:
    op.drop_table("acd_agent_states")
    op.drop_table("acd_calls")
