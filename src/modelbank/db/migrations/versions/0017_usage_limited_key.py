"""the limited key a usage charge counted on (issue 13: refunds give it back)

``usage_events.limited_key_id``: the API key with a spend limit that a charge counted
against (NULL when it was made without one). A refund of the charge gives the refunded µcr
back to that key's allowance within the same period (:func:`modelbank.auth.limits.
refund_charge`); before this column only charges that captured a hold could find their key.
No foreign key (a nullable column checked on every usage insert would cost the hot path a
trigger call; keys are never deleted, only revoked). On PostgreSQL the column goes on the
partitioned parent and so on every month.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.add_column(sa.Column("limited_key_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("limited_key_id")
