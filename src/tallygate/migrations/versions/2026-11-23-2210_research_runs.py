"""Research assistant runs: ``research_runs``, their billed ``research_steps`` and the persisted
progress ``research_events`` a page reload or a second client follows.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-23 22:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "research_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("route_type", sa.String(length=16), nullable=False),
        sa.Column("bucket", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("budget_nanos", sa.BigInteger(), nullable=False),
        sa.Column("estimate_low_nanos", sa.BigInteger(), nullable=False),
        sa.Column("estimate_high_nanos", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stop_reason", sa.Text(), server_default="", nullable=False),
        sa.Column("data_source", sa.String(length=400), nullable=False),
        sa.Column("data_csv", sa.Text(), nullable=False),
        sa.Column("analysis", sa.Text(), server_default="", nullable=False),
        sa.Column("selfcheck_json", sa.Text(), nullable=True),
        sa.Column("key_id", sa.Integer(), nullable=True),
        sa.Column("spent_nanos", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_research_runs_key_id_api_keys")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_research_runs_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_research_runs")),
    )
    with op.batch_alter_table("research_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_research_runs_user_id"), ["user_id"], unique=False)
    op.create_table(
        "research_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("max_tokens", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("output_tokens", sa.Integer(), server_default="0", nullable=False),
        sa.Column("charge_nanos", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("output", sa.Text(), server_default="", nullable=False),
        sa.Column("error", sa.Text(), server_default="", nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["research_runs.id"], name=op.f("fk_research_steps_run_id_research_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_research_steps")),
    )
    with op.batch_alter_table("research_steps", schema=None) as batch_op:
        batch_op.create_index("ix_research_steps_run_seq", ["run_id", "seq"], unique=True)
    op.create_table(
        "research_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data_json", sa.Text(), server_default="{}", nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["research_runs.id"],
            name=op.f("fk_research_events_run_id_research_runs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_research_events")),
    )
    with op.batch_alter_table("research_events", schema=None) as batch_op:
        batch_op.create_index("ix_research_events_run_id", ["run_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("research_events", schema=None) as batch_op:
        batch_op.drop_index("ix_research_events_run_id")
    op.drop_table("research_events")
    with op.batch_alter_table("research_steps", schema=None) as batch_op:
        batch_op.drop_index("ix_research_steps_run_seq")
    op.drop_table("research_steps")
    with op.batch_alter_table("research_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_research_runs_user_id"))
    op.drop_table("research_runs")
