"""resource pool: deposited keys, the models they serve, shared health and breaker state,
route logs and clawback debts; usage rows name the resource that served them (DESIGN §9)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 02:47:37.706782
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import modelbank.db.base

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("owner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("base_url", sa.String(length=500), nullable=False),
        sa.Column("key_encrypted", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("key_mask", sa.String(length=32), nullable=False),
        sa.Column("key_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.String(length=200), nullable=True),
        sa.Column("quota_uusd", sa.BigInteger(), nullable=False),
        sa.Column("market_quota_uusd", sa.BigInteger(), nullable=False),
        sa.Column("consumed_uusd", sa.BigInteger(), nullable=False),
        sa.Column("deposit_credit_ucr", sa.BigInteger(), nullable=False),
        sa.Column("fee_ucr", sa.BigInteger(), nullable=False),
        sa.Column("clawed_back_ucr", sa.BigInteger(), nullable=False),
        sa.Column("created_at", modelbank.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", modelbank.db.base.UTCDateTime(), nullable=False),
        sa.Column("activated_at", modelbank.db.base.UTCDateTime(), nullable=True),
        sa.Column("ended_at", modelbank.db.base.UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "quota_uusd > 0 AND market_quota_uusd >= 0 AND market_quota_uusd <= quota_uusd AND consumed_uusd >= 0 AND deposit_credit_ucr >= 0 AND fee_ucr >= 0 AND clawed_back_ucr >= 0 AND clawed_back_ucr <= deposit_credit_ucr",
            name=op.f("ck_resources_resource_amounts"),
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_resources_owner_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resources")),
    )
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.create_index("ix_resources_owner", ["owner_id", "id"], unique=False)
        batch_op.create_index(
            "uq_resources_live_key",
            ["key_fingerprint"],
            unique=True,
            sqlite_where=sa.text("status IN ('pending', 'active', 'depleted', 'suspended')"),
            postgresql_where=sa.text("status IN ('pending', 'active', 'depleted', 'suspended')"),
        )

    op.create_table(
        "pool_debts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "resource_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("amount_ucr", sa.BigInteger(), nullable=False),
        sa.Column("remaining_ucr", sa.BigInteger(), nullable=False),
        sa.Column("created_at", modelbank.db.base.UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "amount_ucr > 0 AND remaining_ucr >= 0 AND remaining_ucr <= amount_ucr",
            name=op.f("ck_pool_debts_pool_debt_amounts"),
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"], ["resources.id"], name=op.f("fk_pool_debts_resource_id_resources")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_pool_debts_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_debts")),
    )
    with op.batch_alter_table("pool_debts", schema=None) as batch_op:
        batch_op.create_index("ix_pool_debts_user", ["user_id", "id"], unique=False)

    op.create_table(
        "resource_health",
        sa.Column(
            "resource_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("breaker", sa.String(length=16), nullable=False),
        sa.Column("opened_at", modelbank.db.base.UTCDateTime(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("ewma_latency_ms", sa.Float(), nullable=True),
        sa.Column("ewma_ttft_ms", sa.Float(), nullable=True),
        sa.Column("success_rate", sa.Float(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", modelbank.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_id"], ["resources.id"], name=op.f("fk_resource_health_resource_id_resources")
        ),
        sa.PrimaryKeyConstraint("resource_id", name=op.f("pk_resource_health")),
    )
    op.create_table(
        "resource_models",
        sa.Column(
            "resource_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("model_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("upstream_model", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_resource_models_model_id_models")
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"], ["resources.id"], name=op.f("fk_resource_models_resource_id_resources")
        ),
        sa.PrimaryKeyConstraint("resource_id", "model_id", name=op.f("pk_resource_models")),
    )
    with op.batch_alter_table("resource_models", schema=None) as batch_op:
        batch_op.create_index("ix_resource_models_model", ["model_id", "resource_id"], unique=False)

    op.create_table(
        "route_logs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("model_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("endpoint", sa.String(length=32), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("candidates", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.JSON(), nullable=False),
        sa.Column(
            "resource_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("hold_id", sa.BigInteger(), nullable=True),
        sa.Column("usage_id", sa.BigInteger(), nullable=True),
        sa.Column("charge_ucr", sa.BigInteger(), nullable=False),
        sa.Column("cost_uusd", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("created_at", modelbank.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_route_logs_model_id_models")
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"], ["resources.id"], name=op.f("fk_route_logs_resource_id_resources")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_route_logs_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_route_logs")),
        sa.UniqueConstraint("request_id", name=op.f("uq_route_logs_request_id")),
    )
    with op.batch_alter_table("route_logs", schema=None) as batch_op:
        batch_op.create_index("ix_route_logs_resource", ["resource_id", "id"], unique=False)
        batch_op.create_index("ix_route_logs_user", ["user_id", "id"], unique=False)

    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resource_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("usage_estimated", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_column("usage_estimated")
        batch_op.drop_column("resource_id")

    with op.batch_alter_table("route_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_route_logs_user")
        batch_op.drop_index("ix_route_logs_resource")

    op.drop_table("route_logs")
    with op.batch_alter_table("resource_models", schema=None) as batch_op:
        batch_op.drop_index("ix_resource_models_model")

    op.drop_table("resource_models")
    op.drop_table("resource_health")
    with op.batch_alter_table("pool_debts", schema=None) as batch_op:
        batch_op.drop_index("ix_pool_debts_user")

    op.drop_table("pool_debts")
    with op.batch_alter_table("resources", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_resources_live_key",
            sqlite_where=sa.text("status IN ('pending', 'active', 'depleted', 'suspended')"),
            postgresql_where=sa.text("status IN ('pending', 'active', 'depleted', 'suspended')"),
        )
        batch_op.drop_index("ix_resources_owner")

    op.drop_table("resources")
