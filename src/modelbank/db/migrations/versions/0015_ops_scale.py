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

    if op.get_bind().dialect.name == "postgresql":
        _enable_rls()


ROLE = "modelbank_user_reader"
SETTING = "modelbank.user_id"
CURRENT_USER = f"NULLIF(current_setting('{SETTING}', true), '')::bigint"
OWN_ACCOUNTS = f"SELECT id FROM accounts WHERE owner_id = {CURRENT_USER}"
RLS_TABLES = {
    "accounts": f"owner_id IS NULL OR owner_id = {CURRENT_USER}",
    "transfers": f"debit_account_id IN ({OWN_ACCOUNTS}) OR credit_account_id IN ({OWN_ACCOUNTS})",
    "grants": f"user_id = {CURRENT_USER}",
    "grant_burns": f"user_id = {CURRENT_USER}",
    "wallet_holds": f"user_id = {CURRENT_USER}",
    "wallet_alerts": f"user_id = {CURRENT_USER}",
    "purchases": f"user_id = {CURRENT_USER}",
    "payouts": f"user_id = {CURRENT_USER}",
    "earnings_debts": f"user_id = {CURRENT_USER}",
    "pool_debts": f"user_id = {CURRENT_USER}",
}
"""Copied from modelbank.db.rls.TABLES (a test keeps them equal): a migration never changes
with the code."""


def _enable_rls() -> None:
    """The role (cluster-wide, created once; a login role without the right to create roles
    gets a notice and no RLS), its read rights in this schema, then a policy per table."""
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
                CREATE ROLE {ROLE} NOLOGIN;
            END IF;
            IF NOT pg_has_role(current_user, '{ROLE}', 'MEMBER') THEN
                EXECUTE format('GRANT {ROLE} TO %I', current_user);
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'modelbank: cannot create or grant role {ROLE}; row-level security'
                ' policies are installed but reads are not bound (see README)';
        END $$;
        """
    )
    op.execute(
        f"""
        DO $$
        DECLARE here text := current_schema();
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
                EXECUTE format('GRANT USAGE ON SCHEMA %I TO {ROLE}', here);
                EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO {ROLE}', here);
                EXECUTE format(
                    'ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES TO {ROLE}', here
                );
            END IF;
        END $$;
        """
    )
    for table, visible in RLS_TABLES.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"DROP POLICY IF EXISTS user_rows ON {table}")
        op.execute(f"CREATE POLICY user_rows ON {table} FOR SELECT TO PUBLIC USING ({visible})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in RLS_TABLES:
            op.execute(f"DROP POLICY IF EXISTS user_rows ON {table}")
            op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.drop_table("rate_limit_counters")
    op.drop_table("rate_limit_plans")
