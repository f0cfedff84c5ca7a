"""reference epoch: a counter bumped by triggers on the catalog, prices, rules, stakes and
settings, so that charging may cache them per process (DESIGN §16)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The tables of modelbank.db.epoch.EPOCH_TABLES, as they are at this revision (a migration
# must not change when the code's list does).
TABLES = ("models", "price_versions", "earnings_rules", "model_beneficiaries", "platform_settings")


def upgrade() -> None:
    op.create_table(
        "reference_epoch",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reference_epoch")),
    )
    op.execute("INSERT INTO reference_epoch (id, epoch) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION modelbank_bump_reference_epoch() RETURNS trigger AS $$"
            " BEGIN UPDATE reference_epoch SET epoch = epoch + 1 WHERE id = 1; RETURN NULL; END"
            " $$ LANGUAGE plpgsql"
        )
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER trg_{table}_epoch AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE"
                f" ON {table} FOR EACH STATEMENT EXECUTE FUNCTION modelbank_bump_reference_epoch()"
            )
        return
    for table in TABLES:
        for action in ("INSERT", "UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER trg_{table}_epoch_{action.lower()} AFTER {action} ON {table}"
                " BEGIN UPDATE reference_epoch SET epoch = epoch + 1 WHERE id = 1; END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_epoch ON {table}")
        op.execute("DROP FUNCTION IF EXISTS modelbank_bump_reference_epoch()")
    else:
        for table in TABLES:
            for action in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_epoch_{action}")
    op.drop_table("reference_epoch")
