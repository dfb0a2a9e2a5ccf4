"""call recordings: per-queue policy, consent, pauses, links to calls and tickets

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(sa.Column("queue", sa.String(64), nullable=True))
        batch.add_column(sa.Column("pauses", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("interaction_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_recordings_interaction_id_interactions",
            "interactions",
            ["interaction_id"],
            ["id"],
            ondelete="SET NULL",
        )
    op.create_index("ix_recordings_interaction_id", "recordings", ["interaction_id"])
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(
            sa.Column("legal_hold", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("legal_hold")
    op.drop_index("ix_recordings_interaction_id", table_name="recordings")
    with op.batch_alter_table("recordings") as batch:
        batch.drop_constraint("fk_recordings_interaction_id_interactions", type_="foreignkey")
        batch.drop_column("interaction_id")
        batch.drop_column("pauses")
        batch.drop_column("queue")
