"""hash-chained transfers and audit records, the admin audit log (issue 16)

``transfers`` gains ``chain_seq`` and ``chain_hash`` (NULL until the sealer links the row,
:mod:`modelbank.chain`), with a partial index over the unsealed rows and a partial unique
index over the sealed positions; ``audit_records`` is the append-only admin audit log,
chained the same way; ``chain_blocks`` records each sealed block of either chain. Existing
transfers start unsealed: the first ``modelbank jobs run`` seals them.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UNSEALED = sa.text("chain_seq IS NULL")
_SEALED = sa.text("chain_seq IS NOT NULL")


def _chain_indexes(table: str) -> None:
    op.create_index(
        f"ix_{table}_unsealed",
        table,
        ["id"],
        sqlite_where=_UNSEALED,
        postgresql_where=_UNSEALED,
    )
    op.create_index(
        f"uq_{table}_chain_seq",
        table,
        ["chain_seq"],
        unique=True,
        sqlite_where=_SEALED,
        postgresql_where=_SEALED,
    )


def upgrade() -> None:
    with op.batch_alter_table("transfers") as batch:
        batch.add_column(sa.Column("chain_seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("chain_hash", sa.String(64), nullable=True))
    _chain_indexes("transfers")

    op.create_table(
        "audit_records",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("actor_kind", sa.String(16), nullable=False),
        sa.Column("actor_key_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_user_id", sa.BigInteger(), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=False),
        sa.Column("target_id", sa.String(64), nullable=True),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("chain_seq", sa.BigInteger(), nullable=True),
        sa.Column("chain_hash", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_records")),
    )
    op.create_index("ix_audit_records_occurred_at", "audit_records", ["occurred_at"])
    op.create_index("ix_audit_records_action", "audit_records", ["action", "id"])
    op.create_index("ix_audit_records_actor", "audit_records", ["actor_kind", "actor_key_id", "id"])
    _chain_indexes("audit_records")

    op.create_table(
        "chain_blocks",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("chain", sa.String(16), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("sealed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_blocks")),
    )
    op.create_index(
        "uq_chain_blocks_chain_first", "chain_blocks", ["chain", "first_seq"], unique=True
    )


def downgrade() -> None:
    op.drop_table("chain_blocks")
    op.drop_table("audit_records")
    op.drop_index("uq_transfers_chain_seq", table_name="transfers")
    op.drop_index("ix_transfers_unsealed", table_name="transfers")
    with op.batch_alter_table("transfers") as batch:
        batch.drop_column("chain_hash")
        batch.drop_column("chain_seq")
