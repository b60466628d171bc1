"""Partial indexes for unfinished and to-be-archived batches (sweeps cost what they can act on).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UNFINISHED = sa.text("status != 'ended'")
TO_ARCHIVE = sa.text("status = 'ended' AND archived_at IS NULL")


def upgrade() -> None:
    op.drop_index("ix_batches_status", table_name="batches")
    op.create_index("ix_batches_unfinished", "batches", ["seq"], sqlite_where=UNFINISHED, postgresql_where=UNFINISHED)
    op.create_index(
        "ix_batches_unfinished_workspace",
        "batches",
        ["workspace"],
        sqlite_where=UNFINISHED,
        postgresql_where=UNFINISHED,
    )
    op.create_index(
        "ix_batches_to_archive", "batches", ["created_at"], sqlite_where=TO_ARCHIVE, postgresql_where=TO_ARCHIVE
    )


def downgrade() -> None:
    op.drop_index("ix_batches_to_archive", table_name="batches")
    op.drop_index("ix_batches_unfinished_workspace", table_name="batches")
    op.drop_index("ix_batches_unfinished", table_name="batches")
    op.create_index("ix_batches_status", "batches", ["status"])
