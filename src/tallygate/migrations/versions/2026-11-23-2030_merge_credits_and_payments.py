"""Merge the credits (0007) and payments (0008) branches, built in parallel from 0006.

Revision ID: 0009
Revises: 0007, 0008
Create Date: 2026-11-23 20:30:00
"""

from collections.abc import Sequence

revision: str = "0009"
down_revision: str | Sequence[str] | None = ("0007", "0008")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
