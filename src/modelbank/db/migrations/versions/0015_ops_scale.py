"""rate limits and row-level security (issue 16 parts 7 and 9)

* ``rate_limit_plans``: per-user limits by credit balance, seeded with the built-in tiers
  (:data:`modelbank.ratelimits.plans.DEFAULT_PLANS`); ``rate_limit_counters``: the database
  store's fixed-window counters.
* PostgreSQL only (a no-op on SQLite): row-level security on the user-data tables, bound by
  the per-transaction setting ``modelbank.user_id`` for the role ``modelbank_user_reader``
  (:mod:`modelbank.db.rls`), under which user keys' reads run.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

PLANS = (
    ("trial", 0, 5, 20_000),
    ("standard", 10_000_000, 20, 200_000),
    ("pro", 1_000_000_000, 100, 2_000_000),
)
"""Copied from DEFAULT_PLANS on purpose: a migration never changes with the code."""


def upgrade() -> None:
    plans = op.create_table(
        "rate_limit_plans",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("min_balance_ucr", sa.BigInteger(), nullable=False),
        sa.Column("requests_per_s", sa.Integer(), nullable=False),
        sa.Column("tokens_per_min", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("min_balance_ucr"),
    )
    op.bulk_insert(
        plans,
        [
            {"name": n, "min_balance_ucr": b, "requests_per_s": r, "tokens_per_min": t}
            for n, b, r, t in PLANS
        ],
    )
    op.create_table(
        "rate_limit_counters",
        sa.Column("bucket", sa.String(64), nullable=False),
        sa.Column("window", sa.BigInteger(), nullable=False),
        sa.Column("hits", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "window", name="pk_rate_limit_counters"),
    )


def downgrade() -> None:
    op.drop_table("rate_limit_counters")
    op.drop_table("rate_limit_plans")
