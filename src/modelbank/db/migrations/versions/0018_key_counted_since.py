"""when a limited key's counter began counting its charges (issue 13, refunds)

``api_keys.counted_since``: set when a limit is put on a key that had none or its period
changes (:func:`modelbank.auth.limits.set_limit`); NULL while the counter has counted since
the key's limit was created. A refund gives a charge back to the key's allowance only when
the charge was counted by the current counter: charged in the same period, and not before
``counted_since`` (a charge of an earlier, finished day must not lower a month counter
that never counted it).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 10:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from modelbank.db.base import UTCDateTime

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("counted_since", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("counted_since")
