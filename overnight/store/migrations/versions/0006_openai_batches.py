"""Batches get a wire format; the OpenAI Files and Batches APIs get their own tables.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("batches") as table:
        table.add_column(sa.Column("format", sa.String(16), nullable=False, server_default="anthropic"))
    op.create_table(
        "files",
        sa.Column("seq", _ID, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("workspace", sa.String(128), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("content", sa.LargeBinary(), nullable=True),
        sa.Column("batch_seq", _ID, sa.ForeignKey("batches.seq", ondelete="CASCADE"), nullable=True),
        sa.Column("kind", sa.String(8), nullable=True),
    )
    op.create_index("ix_files_workspace_seq", "files", ["workspace", "seq"])
    op.create_table(
        "openai_batches",
        sa.Column("seq", _ID, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("workspace", sa.String(128), nullable=False),
        sa.Column("batch_seq", _ID, sa.ForeignKey("batches.seq", ondelete="SET NULL"), nullable=True),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("input_file_id", sa.String(40), nullable=False),
        sa.Column("completion_window", sa.String(16), nullable=False),
        sa.Column("model", sa.String(256), nullable=True),
        sa.Column("metadata", sa.LargeBinary(), nullable=True),
        sa.Column("errors", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("failed_at", sa.BigInteger(), nullable=True),
        sa.Column("finalized_at", sa.BigInteger(), nullable=True),
        sa.Column("output_file_id", sa.String(40), nullable=True),
        sa.Column("error_file_id", sa.String(40), nullable=True),
    )
    op.create_index("ix_openai_batches_workspace_seq", "openai_batches", ["workspace", "seq"])


def downgrade() -> None:
    op.drop_index("ix_openai_batches_workspace_seq", table_name="openai_batches")
    op.drop_table("openai_batches")
    op.drop_index("ix_files_workspace_seq", table_name="files")
    op.drop_table("files")
    with op.batch_alter_table("batches") as table:
        table.drop_column("format")
