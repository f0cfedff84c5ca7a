"""bounded account totals, room for prefixed idempotency keys, dashboard sessions (issue 16)

* ``accounts``: CHECK ``ck_accounts_totals_bounded`` keeps every running total at or under
  2⁶² µcr (:data:`modelbank.ledger.models.MAX_ACCOUNT_TOTAL`), so a total can never
  overflow 64 bits (SQLite turned it into a float, PostgreSQL raised ``bigint out of
  range``). SQLite rebuilds the (small) accounts table to add it.
* ``transfers.idempotency_key`` and ``usage_events.idempotency_key``: VARCHAR(256), room for
  a caller's 200-character key plus the prefix that scopes it (``api:key:<id>:``,
  ``u<user id>:``). PostgreSQL only: SQLite does not enforce VARCHAR lengths, and rebuilding
  the two largest tables for a declaration would cost minutes on a big database.
* ``web_sessions``: server-side dashboard sessions; signing out ends one.
* ``deployment_key``: the id of the deployment's secret key and where it lives; a process
  with another key refuses to start.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from modelbank.db.base import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

MAX_ACCOUNT_TOTAL = 2**62
"""Frozen copy of :data:`modelbank.ledger.models.MAX_ACCOUNT_TOTAL` (a migration never
changes with the code)."""
_BOUNDED = (
    f"debits_posted <= {MAX_ACCOUNT_TOTAL} AND credits_posted <= {MAX_ACCOUNT_TOTAL}"
    f" AND debits_pending <= {MAX_ACCOUNT_TOTAL} AND credits_pending <= {MAX_ACCOUNT_TOTAL}"
)
_KEY_COLUMNS = (("transfers", "idempotency_key"), ("usage_events", "idempotency_key"))


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.create_check_constraint(op.f("ck_accounts_totals_bounded"), _BOUNDED)
    if postgres:
        for table, column in _KEY_COLUMNS:
            op.alter_column(
                table,
                column,
                existing_type=sa.String(length=200),
                type_=sa.String(length=256),
            )
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column(
            "api_key_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_web_sessions_api_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
    )
    op.create_index("ix_web_sessions_api_key_id", "web_sessions", ["api_key_id"], unique=False)
    op.create_table(
        "deployment_key",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("location", sa.String(length=500), nullable=False),
        sa.Column("registered_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_key")),
    )


def downgrade() -> None:
    op.drop_table("deployment_key")
    op.drop_index("ix_web_sessions_api_key_id", table_name="web_sessions")
    op.drop_table("web_sessions")
    if op.get_bind().dialect.name == "postgresql":
        for table, column in _KEY_COLUMNS:
            op.alter_column(
                table,
                column,
                existing_type=sa.String(length=256),
                type_=sa.String(length=200),
            )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_accounts_totals_bounded"), type_="check")
