"""one active model per character: a partial unique index on models.character_id among
active models, so that usage sent with a character id resolves to exactly one model

Existing data: before this revision no API set ``character_id`` (only
``catalog.service.NewModel`` could), so duplicates are not expected. Should two active
models share a character anyway, the oldest (lowest id) keeps the link and the others lose
it (their ``character_id`` becomes NULL; each is logged), instead of the upgrade failing.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 03:00:00
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

INDEX = "uq_models_active_character"
WHERE = "is_active AND character_id IS NOT NULL"

log = logging.getLogger("alembic.runtime.migration")

models = sa.table(
    "models",
    sa.column("id", sa.BigInteger()),
    sa.column("character_id", sa.String(200)),
    sa.column("is_active", sa.Boolean()),
)


def _unlink_duplicates() -> None:
    """Keep each character on its oldest active model; unlink the other active ones."""
    linked = sa.and_(models.c.is_active.is_(sa.true()), models.c.character_id.is_not(None))
    keepers = sa.select(sa.func.min(models.c.id)).where(linked).group_by(models.c.character_id)
    losers = sa.select(models.c.id, models.c.character_id).where(
        linked, models.c.id.not_in(keepers)
    )
    bind = op.get_bind()
    for model_id, character_id in bind.execute(losers).all():
        log.warning(
            "model %s unlinked from character %r: an older active model has it",
            model_id,
            character_id,
        )
        bind.execute(sa.update(models).where(models.c.id == model_id).values(character_id=None))


def upgrade() -> None:
    _unlink_duplicates()
    # Not in a batch: on SQLite a batch could recreate the table and lose its triggers (0006).
    op.create_index(
        INDEX,
        "models",
        ["character_id"],
        unique=True,
        sqlite_where=sa.text(WHERE),
        postgresql_where=sa.text(WHERE),
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="models")
