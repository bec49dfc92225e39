"""Index only the receipts that have an upstream Responses id.

Only Responses API calls fill ``receipts.upstream_response_id``; the full index still took one
page write per billed request (decision 0021). The lookup (``WHERE upstream_response_id = ?``)
implies NOT NULL, so SQLite and PostgreSQL both use the partial index for it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 19:25:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WHERE = sa.text("upstream_response_id IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.drop_index("ix_receipts_upstream_response_id")
        batch_op.create_index(
            "ix_receipts_upstream_response_id",
            ["upstream_response_id"],
            unique=False,
            sqlite_where=_WHERE,
            postgresql_where=_WHERE,
        )


def downgrade() -> None:
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.drop_index("ix_receipts_upstream_response_id")
        batch_op.create_index(
            "ix_receipts_upstream_response_id", ["upstream_response_id"], unique=False
        )
