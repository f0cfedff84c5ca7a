"""marketplace: listings, orders, escrow, allocations (issue 15)

(Reserved in order so that work on several issues can proceed in parallel; a revision
with nothing in it is a no-op.)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 06:00:00
"""

from __future__ import annotations

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
