"""Each batch records the id range of its requests (results stream as a few range scans) and the
`anthropic-beta` features its requests run with.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL only for a batch that has no requests left (archived).
    op.add_column("batches", sa.Column("first_request_id", sa.BigInteger(), nullable=True))
    op.add_column("batches", sa.Column("last_request_id", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE batches SET first_request_id = (SELECT min(id) FROM requests WHERE batch_seq = batches.seq), "
        "last_request_id = (SELECT max(id) FROM requests WHERE batch_seq = batches.seq)"
    )
    op.add_column("batches", sa.Column("betas", sa.String(1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("betas")
        batch.drop_column("last_request_id")
        batch.drop_column("first_request_id")
