"""Payment webhook jobs and in-flight refund holds.

- ``payment_jobs``: the durable queue behind webhooks (one job per stored inbox event; events
  stored before this revision and still unhandled get a job here, so none is lost);
- ``refunds.hold_key`` / ``held_nanos``: the ledger hold that keeps an in-flight refund's money
  from being spent while the provider processes it;
- ``payment_orders.refund_state`` may be ``pending``; ``first_approval_json`` holds a bank
  approval waiting for a second reviewer.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 22:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payment_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("inbox_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="queued", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("run_after", sa.BigInteger(), nullable=False),
        sa.Column("claimed_by", sa.String(length=80), nullable=True),
        sa.Column("claimed_at", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'done', 'dead')",
            name=op.f("ck_payment_jobs_status"),
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["inbox_events.id"],
            name=op.f("fk_payment_jobs_inbox_id_inbox_events"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_jobs")),
        sa.UniqueConstraint("inbox_id", name=op.f("uq_payment_jobs_inbox_id")),
    )
    with op.batch_alter_table("payment_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_payment_jobs_due", ["status", "run_after"], unique=False)
    # Events stored before the queue existed and never handled: give each a job.
    op.execute(
        "INSERT INTO payment_jobs (inbox_id, source, status, attempts, run_after, created_at, "
        "updated_at) SELECT id, source, 'queued', 0, received_at, received_at, received_at "
        "FROM inbox_events WHERE handled_at IS NULL"
    )

    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hold_key", sa.String(length=200), nullable=True))
        batch_op.add_column(
            sa.Column("held_nanos", sa.BigInteger(), server_default="0", nullable=False)
        )

    with op.batch_alter_table("payment_orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("first_approval_json", sa.Text(), nullable=True))
        batch_op.drop_constraint(op.f("ck_payment_orders_refund_state"), type_="check")
        batch_op.create_check_constraint(
            op.f("ck_payment_orders_refund_state"),
            "refund_state IN ('none', 'pending', 'partial', 'full')",
        )


def downgrade() -> None:
    op.execute("UPDATE payment_orders SET refund_state = 'none' WHERE refund_state = 'pending'")
    with op.batch_alter_table("payment_orders", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_payment_orders_refund_state"), type_="check")
        batch_op.create_check_constraint(
            op.f("ck_payment_orders_refund_state"),
            "refund_state IN ('none', 'partial', 'full')",
        )
        batch_op.drop_column("first_approval_json")

    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_column("held_nanos")
        batch_op.drop_column("hold_key")

    with op.batch_alter_table("payment_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_jobs_due")
    op.drop_table("payment_jobs")
