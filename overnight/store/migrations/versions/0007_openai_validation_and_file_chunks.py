"""OpenAI batches validate in the background (a claim on the row, their own expiry and cancel time);
uploaded files are stored in chunks, not as one value.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_VALIDATING = sa.text("batch_seq IS NULL AND failed_at IS NULL AND cancelled_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("openai_batches") as table:
        table.add_column(sa.Column("expires_at", sa.BigInteger(), nullable=True))
        table.add_column(sa.Column("cancelled_at", sa.BigInteger(), nullable=True))
        table.add_column(sa.Column("validation_owner", sa.String(128), nullable=True))
        table.add_column(sa.Column("validation_expires_at", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_openai_batches_validating",
        "openai_batches",
        ["seq"],
        sqlite_where=_VALIDATING,
        postgresql_where=_VALIDATING,
    )
    op.create_table(
        "file_chunks",
        sa.Column("file_seq", _ID, sa.ForeignKey("files.seq", ondelete="CASCADE"), primary_key=True),
        sa.Column("idx", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    # Files uploaded before this keep their bytes, as one chunk (a shorter one is read the same way).
    op.execute(
        "INSERT INTO file_chunks (file_seq, idx, data) SELECT seq, 0, content FROM files WHERE content IS NOT NULL"
    )
    with op.batch_alter_table("files") as table:
        table.drop_column("content")


def downgrade() -> None:
    with op.batch_alter_table("files") as table:
        table.add_column(sa.Column("content", sa.LargeBinary(), nullable=True))
    # Only single-chunk files come back whole; bigger ones lose their bytes.
    op.execute(
        "UPDATE files SET content = (SELECT data FROM file_chunks WHERE file_seq = files.seq AND idx = 0) "
        "WHERE batch_seq IS NULL AND (SELECT count(*) FROM file_chunks WHERE file_seq = files.seq) = 1"
    )
    op.drop_table("file_chunks")
    op.drop_index("ix_openai_batches_validating", table_name="openai_batches")
    with op.batch_alter_table("openai_batches") as table:
        for name in ("validation_expires_at", "validation_owner", "cancelled_at", "expires_at"):
            table.drop_column(name)
