"""Token usage per batch, the live-workers table, and PostgreSQL storage settings for the queue row.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_USAGE = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def upgrade() -> None:
    for name in _USAGE:
        op.add_column("batches", sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"))
    op.create_table(
        "nodes",
        sa.Column("owner", sa.String(128), primary_key=True),
        sa.Column("seen_at", sa.BigInteger(), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Keep the hot queue row narrow: every lease, renewal and completion writes a new version of
        # the row, which would otherwise copy large params each time. Values compress with lz4 and
        # move out of line once a row passes 1 KiB (not PostgreSQL's 2 KiB: a typical 2-3 KB prompt
        # compresses to under that and would stay in the row); short ones stay in the row, where
        # copying them costs less than a TOAST table's extra row and index entry.
        op.execute("ALTER TABLE requests SET (toast_tuple_target = 1024)")
        op.execute("ALTER TABLE requests ALTER COLUMN params SET COMPRESSION lz4")
        op.execute("ALTER TABLE requests ALTER COLUMN result SET COMPRESSION lz4")


def downgrade() -> None:
    op.drop_table("nodes")
    with op.batch_alter_table("batches") as batch:
        for name in reversed(_USAGE):
            batch.drop_column(name)
