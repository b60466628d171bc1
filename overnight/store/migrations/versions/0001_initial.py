"""Batches and their requests.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("seq", _Id, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("workspace", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("processing", sa.Integer, nullable=False),
        sa.Column("succeeded", sa.Integer, nullable=False, server_default="0"),
        sa.Column("errored", sa.Integer, nullable=False, server_default="0"),
        sa.Column("canceled", sa.Integer, nullable=False, server_default="0"),
        sa.Column("expired", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("ended_at", sa.BigInteger, nullable=True),
        sa.Column("cancel_initiated_at", sa.BigInteger, nullable=True),
        sa.Column("archived_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_batches_workspace_seq", "batches", ["workspace", "seq"])
    op.create_index("ix_batches_status", "batches", ["status"])
    op.create_table(
        "requests",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("batch_seq", _Id, sa.ForeignKey("batches.seq", ondelete="CASCADE"), nullable=False),
        sa.Column("custom_id", sa.String(64), nullable=False),
        sa.Column("params", sa.LargeBinary, nullable=True),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", sa.BigInteger, nullable=True),
        sa.Column("result", sa.LargeBinary, nullable=True),
        sa.UniqueConstraint("batch_seq", "custom_id", name="uq_requests_batch_custom_id"),
    )
    op.create_index("ix_requests_batch_state", "requests", ["batch_seq", "state", "id"])


def downgrade() -> None:
    op.drop_table("requests")
    op.drop_table("batches")
