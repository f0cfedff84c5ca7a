"""auto top-up and email notices (issue 13): ``auto_topups`` (a user's settings and trigger
state), ``purchases.origin`` with a unique partial index allowing one auto top-up in flight
per user, ``tasks`` (the after-commit task outbox) and ``notice_recipients``

Existing purchases get ``origin = 'checkout'`` (the server default).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from modelbank.db.base import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
IN_FLIGHT = "origin = 'auto_topup' AND status = 'pending'"


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("done_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    op.create_index("ix_tasks_due", "tasks", ["status", "next_attempt_at"], unique=False)
    op.create_index("ix_tasks_user", "tasks", ["user_id", "id"], unique=False)
    op.create_table(
        "auto_topups",
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("threshold_ucr", sa.BigInteger(), nullable=False),
        sa.Column("package_id", BIG_ID, nullable=True),
        sa.Column("monthly_cap_count", sa.BigInteger(), nullable=False),
        sa.Column("monthly_cap_uusd", sa.BigInteger(), nullable=False),
        sa.Column("triggered_at", UTCDateTime(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("disabled_reason", sa.String(length=64), nullable=True),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_payment_method_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "threshold_ucr >= 0 AND monthly_cap_count >= 0 AND monthly_cap_uusd >= 0",
            name=op.f("ck_auto_topups_auto_topup_amounts"),
        ),
        sa.ForeignKeyConstraint(
            ["package_id"],
            ["credit_packages.id"],
            name=op.f("fk_auto_topups_package_id_credit_packages"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_auto_topups_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_auto_topups")),
    )
    op.create_table(
        "notice_recipients",
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_notice_recipients_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_notice_recipients")),
    )
    # Not in a batch: on SQLite a batch could recreate the table (ADD COLUMN needs none).
    op.add_column(
        "purchases",
        sa.Column("origin", sa.String(length=16), server_default="checkout", nullable=False),
    )
    op.create_index(
        "uq_purchases_auto_topup_in_flight",
        "purchases",
        ["user_id"],
        unique=True,
        sqlite_where=sa.text(IN_FLIGHT),
        postgresql_where=sa.text(IN_FLIGHT),
    )


def downgrade() -> None:
    op.drop_index("uq_purchases_auto_topup_in_flight", table_name="purchases")
    op.drop_column("purchases", "origin")
    op.drop_table("notice_recipients")
    op.drop_table("auto_topups")
    op.drop_index("ix_tasks_user", table_name="tasks")
    op.drop_index("ix_tasks_due", table_name="tasks")
    op.drop_table("tasks")
