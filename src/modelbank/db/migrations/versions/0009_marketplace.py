"""marketplace: listings (quota, stake, bundle), bundle items, orders with escrow accounting,
allocations of bought quota, the gateway calls served from them, disputes (issue 15,
DESIGN §10)

New tables, and ``resources.moved_credit_ucr`` (0 for existing rows: deposit credit reversed
when quota moves from the pool part to the market part). The ``marketplace_escrow`` account
already exists (created with the other platform accounts). Stake sales of
``stake_listings`` (earnings, direct and without commission) are left as they are: the
marketplace's stake listings are new rows here.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import modelbank.db.base

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Not in a batch: on SQLite a batch could recreate the table and lose its triggers (0006).
    op.add_column(
        "resources",
        sa.Column("moved_credit_ucr", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "marketplace_listings",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "seller_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column(
            "resource_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("model_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("filled", sa.BigInteger(), nullable=False),
        sa.Column("min_fill", sa.BigInteger(), nullable=False),
        sa.Column("unit_price_ucr", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expires_at", modelbank.db.base.UTCDateTime(), nullable=True),
        sa.Column("allocation_days", sa.Integer(), nullable=True),
        sa.Column("created_at", modelbank.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", modelbank.db.base.UTCDateTime(), nullable=False),
        sa.Column("closed_at", modelbank.db.base.UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "quantity > 0 AND filled >= 0 AND filled <= quantity AND min_fill > 0 AND min_fill <= quantity AND unit_price_ucr >= 0",
            name=op.f("ck_marketplace_listings_market_listing_amounts"),
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_marketplace_listings_model_id_models")
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"],
            ["resources.id"],
            name=op.f("fk_marketplace_listings_resource_id_resources"),
        ),
        sa.ForeignKeyConstraint(
            ["seller_id"], ["users.id"], name=op.f("fk_marketplace_listings_seller_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marketplace_listings")),
    )
    op.create_index(
        "ix_marketplace_listings_resource",
        "marketplace_listings",
        ["resource_id", "status"],
        unique=False,
    )
    op.create_index(
        "ix_marketplace_listings_seller", "marketplace_listings", ["seller_id", "id"], unique=False
    )
    op.create_index(
        "ix_marketplace_listings_status",
        "marketplace_listings",
        ["status", "kind", "id"],
        unique=False,
    )
    op.create_table(
        "marketplace_bundle_items",
        sa.Column(
            "listing_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "resource_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("quantity_uusd", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "quantity_uusd > 0",
            name=op.f("ck_marketplace_bundle_items_market_bundle_item_quantity"),
        ),
        sa.ForeignKeyConstraint(
            ["listing_id"],
            ["marketplace_listings.id"],
            name=op.f("fk_marketplace_bundle_items_listing_id_marketplace_listings"),
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"],
            ["resources.id"],
            name=op.f("fk_marketplace_bundle_items_resource_id_resources"),
        ),
        sa.PrimaryKeyConstraint(
            "listing_id", "resource_id", name=op.f("pk_marketplace_bundle_items")
        ),
    )
    op.create_index(
        "ix_marketplace_bundle_items_resource",
        "marketplace_bundle_items",
        ["resource_id"],
        unique=False,
    )
    op.create_table(
        "marketplace_orders",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "listing_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("buyer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "seller_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("unit_price_ucr", sa.BigInteger(), nullable=False),
        sa.Column("paid_ucr", sa.BigInteger(), nullable=False),
        sa.Column("basis_uusd", sa.BigInteger(), nullable=False),
        sa.Column("commission_bps", sa.Integer(), nullable=False),
        sa.Column("seller_ucr", sa.BigInteger(), nullable=False),
        sa.Column("commission_ucr", sa.BigInteger(), nullable=False),
        sa.Column("returned_ucr", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "escrow_transfer_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.Column("created_at", modelbank.db.base.UTCDateTime(), nullable=False),
        sa.Column("closed_at", modelbank.db.base.UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "quantity > 0 AND paid_ucr >= 0 AND seller_ucr >= 0 AND commission_ucr >= 0 AND returned_ucr >= 0 AND seller_ucr + commission_ucr + returned_ucr <= paid_ucr AND commission_bps >= 0 AND commission_bps <= 10000",
            name=op.f("ck_marketplace_orders_market_order_amounts"),
        ),
        sa.ForeignKeyConstraint(
            ["buyer_id"], ["users.id"], name=op.f("fk_marketplace_orders_buyer_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["escrow_transfer_id"],
            ["transfers.id"],
            name=op.f("fk_marketplace_orders_escrow_transfer_id_transfers"),
        ),
        sa.ForeignKeyConstraint(
            ["listing_id"],
            ["marketplace_listings.id"],
            name=op.f("fk_marketplace_orders_listing_id_marketplace_listings"),
        ),
        sa.ForeignKeyConstraint(
            ["seller_id"], ["users.id"], name=op.f("fk_marketplace_orders_seller_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marketplace_orders")),
    )
    op.create_index(
        "ix_marketplace_orders_listing", "marketplace_orders", ["listing_id", "id"], unique=False
    )
    op.create_index(
        "ix_marketplace_orders_seller", "marketplace_orders", ["seller_id", "id"], unique=False
    )
    op.create_index(
        "ix_marketplace_orders_status", "marketplace_orders", ["status", "id"], unique=False
    )
    op.create_index(
        "uq_marketplace_orders_key",
        "marketplace_orders",
        ["buyer_id", "idempotency_key"],
        unique=True,
    )
    op.create_table(
        "marketplace_allocations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("buyer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "seller_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "resource_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("quantity_uusd", sa.BigInteger(), nullable=False),
        sa.Column("consumed_uusd", sa.BigInteger(), nullable=False),
        sa.Column("held_uusd", sa.BigInteger(), nullable=False),
        sa.Column("paid_ucr", sa.BigInteger(), nullable=False),
        sa.Column("seller_ucr", sa.BigInteger(), nullable=False),
        sa.Column("commission_ucr", sa.BigInteger(), nullable=False),
        sa.Column("returned_ucr", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expires_at", modelbank.db.base.UTCDateTime(), nullable=True),
        sa.Column("created_at", modelbank.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", modelbank.db.base.UTCDateTime(), nullable=False),
        sa.Column("closed_at", modelbank.db.base.UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "quantity_uusd > 0 AND consumed_uusd >= 0 AND consumed_uusd <= quantity_uusd AND held_uusd >= 0 AND paid_ucr >= 0 AND seller_ucr >= 0 AND commission_ucr >= 0 AND returned_ucr >= 0 AND seller_ucr + commission_ucr + returned_ucr <= paid_ucr",
            name=op.f("ck_marketplace_allocations_market_allocation_amounts"),
        ),
        sa.ForeignKeyConstraint(
            ["buyer_id"], ["users.id"], name=op.f("fk_marketplace_allocations_buyer_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["marketplace_orders.id"],
            name=op.f("fk_marketplace_allocations_order_id_marketplace_orders"),
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"],
            ["resources.id"],
            name=op.f("fk_marketplace_allocations_resource_id_resources"),
        ),
        sa.ForeignKeyConstraint(
            ["seller_id"], ["users.id"], name=op.f("fk_marketplace_allocations_seller_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marketplace_allocations")),
    )
    op.create_index(
        "ix_marketplace_allocations_buyer",
        "marketplace_allocations",
        ["buyer_id", "status", "id"],
        unique=False,
    )
    op.create_index(
        "ix_marketplace_allocations_order", "marketplace_allocations", ["order_id"], unique=False
    )
    op.create_index(
        "ix_marketplace_allocations_resource",
        "marketplace_allocations",
        ["resource_id", "status"],
        unique=False,
    )
    op.create_table(
        "marketplace_allocation_uses",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "allocation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("held_uusd", sa.BigInteger(), nullable=False),
        sa.Column("cost_uusd", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("released_ucr", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expires_at", modelbank.db.base.UTCDateTime(), nullable=False),
        sa.Column("created_at", modelbank.db.base.UTCDateTime(), nullable=False),
        sa.Column("settled_at", modelbank.db.base.UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "held_uusd >= 0 AND cost_uusd >= 0",
            name=op.f("ck_marketplace_allocation_uses_market_use_amounts"),
        ),
        sa.ForeignKeyConstraint(
            ["allocation_id"],
            ["marketplace_allocations.id"],
            name=op.f("fk_marketplace_allocation_uses_allocation_id_marketplace_allocations"),
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_marketplace_allocation_uses_model_id_models")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marketplace_allocation_uses")),
        sa.UniqueConstraint("request_id", name=op.f("uq_marketplace_allocation_uses_request_id")),
    )
    op.create_index(
        "ix_marketplace_allocation_uses_allocation",
        "marketplace_allocation_uses",
        ["allocation_id", "id"],
        unique=False,
    )
    op.create_index(
        "ix_marketplace_allocation_uses_status",
        "marketplace_allocation_uses",
        ["status", "expires_at"],
        unique=False,
    )
    op.create_table(
        "marketplace_disputes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "allocation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("buyer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("resolution", sa.String(length=1000), nullable=True),
        sa.Column(
            "resolved_by", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("amount_ucr", sa.BigInteger(), nullable=False),
        sa.Column("created_at", modelbank.db.base.UTCDateTime(), nullable=False),
        sa.Column("resolved_at", modelbank.db.base.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["allocation_id"],
            ["marketplace_allocations.id"],
            name=op.f("fk_marketplace_disputes_allocation_id_marketplace_allocations"),
        ),
        sa.ForeignKeyConstraint(
            ["buyer_id"], ["users.id"], name=op.f("fk_marketplace_disputes_buyer_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["resolved_by"], ["users.id"], name=op.f("fk_marketplace_disputes_resolved_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_marketplace_disputes")),
    )
    op.create_index(
        "ix_marketplace_disputes_allocation",
        "marketplace_disputes",
        ["allocation_id"],
        unique=False,
    )
    op.create_index(
        "ix_marketplace_disputes_status", "marketplace_disputes", ["status", "id"], unique=False
    )


def downgrade() -> None:
    with op.batch_alter_table("resources") as batch:
        batch.drop_column("moved_credit_ucr")
    op.drop_index("ix_marketplace_disputes_status", table_name="marketplace_disputes")
    op.drop_index("ix_marketplace_disputes_allocation", table_name="marketplace_disputes")
    op.drop_table("marketplace_disputes")
    op.drop_index("ix_marketplace_allocation_uses_status", table_name="marketplace_allocation_uses")
    op.drop_index(
        "ix_marketplace_allocation_uses_allocation", table_name="marketplace_allocation_uses"
    )
    op.drop_table("marketplace_allocation_uses")
    op.drop_index("ix_marketplace_allocations_resource", table_name="marketplace_allocations")
    op.drop_index("ix_marketplace_allocations_order", table_name="marketplace_allocations")
    op.drop_index("ix_marketplace_allocations_buyer", table_name="marketplace_allocations")
    op.drop_table("marketplace_allocations")
    op.drop_index("uq_marketplace_orders_key", table_name="marketplace_orders")
    op.drop_index("ix_marketplace_orders_status", table_name="marketplace_orders")
    op.drop_index("ix_marketplace_orders_seller", table_name="marketplace_orders")
    op.drop_index("ix_marketplace_orders_listing", table_name="marketplace_orders")
    op.drop_table("marketplace_orders")
    op.drop_index("ix_marketplace_bundle_items_resource", table_name="marketplace_bundle_items")
    op.drop_table("marketplace_bundle_items")
    op.drop_index("ix_marketplace_listings_status", table_name="marketplace_listings")
    op.drop_index("ix_marketplace_listings_seller", table_name="marketplace_listings")
    op.drop_index("ix_marketplace_listings_resource", table_name="marketplace_listings")
    op.drop_table("marketplace_listings")
