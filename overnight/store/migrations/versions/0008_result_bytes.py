"""The bytes of each batch's stored result lines, succeeded and errored, summed as they are stored: an
OpenAI batch's output and error files get their sizes from these instead of a scan of its results.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_COLUMNS = {"succeeded_bytes": "succeeded", "errored_bytes": "errored"}


def upgrade() -> None:
    for name in _COLUMNS:
        op.add_column("batches", sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"))
    # Batches stored before this count what they already hold (one pass over each batch's results,
    # by the index on batch and state).
    for name, state in _COLUMNS.items():
        op.execute(
            f"UPDATE batches SET {name} = COALESCE((SELECT SUM(LENGTH(result)) FROM requests "
            f"WHERE requests.batch_seq = batches.seq AND requests.state = '{state}'), 0)"
        )


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
