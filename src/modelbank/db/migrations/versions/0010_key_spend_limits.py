"""per-key spend limits (issue 13): ``api_keys`` gains a limit (µcr) and its reset period,
the current period's start and its counters (spent, reserved by pending holds);
``wallet_holds`` records the limited key a hold's amount is reserved on

Existing keys get no limit (``limit_ucr`` NULL) and zero counters; existing holds reserve
on no key. Plain added columns (no table rebuild on SQLite).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from modelbank.db.base import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("limit_ucr", sa.BigInteger(), nullable=True))
    op.add_column("api_keys", sa.Column("limit_period", sa.String(8), nullable=True))
    op.add_column("api_keys", sa.Column("period_start", UTCDateTime(), nullable=True))
    op.add_column(
        "api_keys",
        sa.Column("spent_ucr", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )
    op.add_column(
        "api_keys",
        sa.Column("reserved_ucr", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )
    op.add_column("wallet_holds", sa.Column("api_key_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # Columns dropped one by one: SQLite ≥ 3.35 drops a plain column in place.
    op.drop_column("wallet_holds", "api_key_id")
    for column in ("reserved_ucr", "spent_ucr", "period_start", "limit_period", "limit_ucr"):
        op.drop_column("api_keys", column)
