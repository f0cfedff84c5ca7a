"""monthly partitioning on PostgreSQL (issue 16)

(Reserved in order so that work on several issues can proceed in parallel; a revision
with nothing in it is a no-op.)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 06:00:00
"""

from __future__ import annotations

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
