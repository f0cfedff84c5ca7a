"""Migration 0008 (one active model per character): existing duplicates cannot fail the
upgrade (the oldest active model keeps the link), and the index the migration makes is the
one the catalog's table declares. SQLite and PostgreSQL (its own schema)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.exc import IntegrityError

from modelbank.catalog.models import models_table as models
from modelbank.db.engine import make_engine
from modelbank.db.migrate import alembic_config, upgrade
from tests.conftest import POSTGRES_URL, _postgres_reason


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database (not migrated)."""
    if request.param == "sqlite":
        made = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
        yield made
        made.dispose()
        return
    reason = _postgres_reason()
    if reason:
        pytest.skip(reason)
    schema = f"mb_mig_{uuid.uuid4().hex[:10]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    made = make_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"})
    yield made
    made.dispose()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def _model(slug: str, character: str | None, *, active: bool = True) -> dict[str, object]:
    return {
        "slug": slug,
        "name": slug,
        "provider": "p",
        "provider_model_ref": slug,
        "mode": "chat",
        "category": "General",
        "tier": "medium",
        "demand": "medium",
        "is_active": active,
        "is_premium": False,
        "access_price_ucr": 0,
        "character_id": character,
        "monetised": True,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    }


def test_upgrade_keeps_the_oldest_active_link_and_then_refuses_duplicates(engine: Engine) -> None:
    upgrade(engine, "0007")
    rows = [
        _model("a-old", "char-a"),
        _model("a-new", "char-a"),
        _model("a-newer", "char-a"),
        _model("a-inactive", "char-a", active=False),
        _model("b", "char-b"),
        _model("none-1", None),
        _model("none-2", None),
    ]
    with engine.begin() as conn:
        conn.execute(insert(models), rows)
    upgrade(engine, "0008")
    with engine.begin() as conn:
        links = dict(conn.execute(select(models.c.slug, models.c.character_id)).all())
    assert links == {
        "a-old": "char-a",
        "a-new": None,
        "a-newer": None,
        "a-inactive": "char-a",  # inactive models keep theirs: the index covers active ones
        "b": "char-b",
        "none-1": None,
        "none-2": None,
    }
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(models), [_model("b-2", "char-b")])
    with engine.begin() as conn:  # an inactive duplicate is allowed
        conn.execute(insert(models), [_model("b-3", "char-b", active=False)])

    # down and up again: the index goes and comes back
    config = alembic_config()
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0007")
        connection.commit()
    with engine.begin() as conn:
        conn.execute(insert(models), [_model("b-4", "char-b")])
    upgrade(engine, "0008")
    with engine.begin() as conn:
        b4 = conn.execute(select(models.c.character_id).where(models.c.slug == "b-4")).scalar()
    assert b4 is None


def test_migration_and_table_declare_the_same_index(engine: Engine) -> None:
    """Alembic's autogenerate comparison finds no difference in the models table's indexes
    between the migrated database and the declared metadata."""

    from tests.db.compare import schema_diffs

    upgrade(engine)
    with engine.connect() as conn:
        diffs = schema_diffs(conn)
    about_models = [
        d
        for d in diffs
        if isinstance(d, tuple)
        and "index" in str(d[0])
        and getattr(d[1], "table", None) is not None
        and d[1].table.name == "models"
    ]
    assert about_models == []
