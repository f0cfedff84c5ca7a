"""``modelbank backup`` → ``modelbank restore`` → ``verify --chain`` (issue 16 part 6), on
SQLite (the online backup API, restored into a fresh file) and PostgreSQL (pg_dump of the
test's schema, restored into a fresh database)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update
from typer.testing import CliRunner

from modelbank import chain
from modelbank.audit import service as audit
from modelbank.cli.app import app
from modelbank.db.engine import make_engine
from modelbank.ledger.models import transfers_table as transfers
from modelbank.metering import service as metering
from tests.conftest import POSTGRES_URL, Db
from tests.factories import model, user

runner = CliRunner()


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout + result.stderr


def _some_business(db: Db) -> None:
    with db.tx() as session:
        alice = user(session, "alice", credits_ucr=50_000_000)
        model(session, "gpt-4o")
        for i in range(3):
            metering.charge(
                session,
                metering.UsageEvent(
                    idempotency_key=f"e{i}",
                    user_id=alice,
                    model="gpt-4o",
                    input_tokens=1_000,
                    output_tokens=200,
                ),
            )
        audit.record(session, "test.backup", "thing", 1, after={"n": 1})
    chain.seal_all(db.factory)


def _state(url: str) -> tuple[int, list[str]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(transfers)).scalar_one()
            heads = conn.execute(
                text("SELECT head_hash FROM chain_blocks ORDER BY chain, last_seq")
            ).scalars()
            return int(count), list(heads)
    finally:
        engine.dispose()


@pytest.fixture
def fresh_url(db: Db, tmp_path: Path) -> Iterator[str]:
    """An empty database to restore into: a new SQLite file, or a new PostgreSQL database
    (the dump recreates the test's schema in it)."""
    if db.backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'restored.db'}"
        return
    name = f"mb_restore_{uuid.uuid4().hex[:10]}"
    admin = make_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base, _, query = db.url.partition("?")
    yield f"{base.rsplit('/', 1)[0]}/{name}?{query}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_backup_restore_verify(db: Db, fresh_url: str, tmp_path: Path) -> None:
    _some_business(db)
    before = _state(db.url)
    path = tmp_path / "backup.bin"
    code, out = _cli("backup", str(path), "--db", db.url)
    assert code == 0, out
    assert "chain transfers ok: " in out and "ledger ok" in out
    assert before[1][-1] in out.replace("\n", "")  # the heads, to record elsewhere
    code, out = _cli("restore", str(path), "--db", fresh_url, "--yes")
    assert code == 0, out
    assert "chain transfers ok" in out and "chain audit ok" in out
    assert _state(fresh_url) == before


def test_restore_puts_back_what_was_backed_up(db: Db, tmp_path: Path) -> None:
    _some_business(db)
    before = _state(db.url)
    path = tmp_path / "backup.bin"
    assert _cli("backup", str(path), "--db", db.url)[0] == 0
    with db.tx() as session:
        user(session, "bob", credits_ucr=1_000_000)  # written after the backup
    assert _state(db.url)[0] == before[0] + 1
    db.engine.dispose()  # the restore replaces the schema: no connection may hold it
    code, out = _cli("restore", str(path), "--db", db.url, "--yes")
    assert code == 0, out
    assert _state(db.url) == before


def test_a_tampered_backup_is_named_and_a_bad_file_refused(db: Db, tmp_path: Path) -> None:
    _some_business(db)
    with db.tx() as session:
        first = session.execute(select(func.min(transfers.c.id))).scalar_one()
        ref_type = session.execute(
            select(transfers.c.ref_type).where(transfers.c.id == first)
        ).scalar_one()
        session.execute(update(transfers).where(transfers.c.id == first).values(ref_type="forged"))
    code, out = _cli("backup", str(tmp_path / "b.bin"), "--db", db.url)
    assert code == 1
    assert f"chain transfers: transfer {first} at position 1" in out
    with db.tx() as session:
        session.execute(update(transfers).where(transfers.c.id == first).values(ref_type=ref_type))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a backup")
    code, out = _cli("restore", str(junk), "--db", db.url, "--yes")
    assert code == 2 and "not a modelbank backup" in out, out
    assert _cli("verify", "--chain", "--db", db.url)[0] == 0


def test_restore_of_a_partitioned_database_keeps_keys_and_months(db: Db, tmp_path: Path) -> None:
    """PostgreSQL: a backup holding rows in a month partition and in the default one (a
    charge dated past every month made), restored in place after the jobs made more months:
    verify passes, the side tables' keys hold (a key replays, a hold cannot be resolved
    twice) and new rows go on."""
    if db.backend != "postgres":
        pytest.skip("monthly partitioning is PostgreSQL's")
    from datetime import UTC, datetime, timedelta

    from modelbank.db import partitions
    from modelbank.ledger.errors import HoldNotPending
    from modelbank.wallets import holds

    _some_business(db)
    now = datetime.now(UTC)
    with db.tx() as session:
        alice = session.execute(text("SELECT min(id) FROM users")).scalar_one()
        hold = holds.place(session, alice, 1_000_000, timeout_s=60, idempotency_key="bk-hold")
    with db.tx() as session:
        holds.void(session, hold.id)
    with db.tx() as session:
        far = metering.charge(
            session,
            metering.UsageEvent("far", alice, "gpt-4o", input_tokens=10),
            now=now + timedelta(days=200),
        )
    chain.seal_all(db.factory)
    before = _state(db.url)
    path = tmp_path / "backup.bin"
    code, out = _cli("backup", str(path), "--db", db.url)
    assert code == 0, out
    with db.tx() as session:  # months made after the backup; the far row moves out
        made = partitions.ensure_ahead(session.connection(), now + timedelta(days=150))
    assert made
    db.engine.dispose()
    code, out = _cli("restore", str(path), "--db", db.url, "--yes")
    assert code == 0, out
    assert _state(db.url) == before
    with db.tx() as session:
        where = session.execute(
            text("SELECT tableoid::regclass::text FROM usage_events WHERE id = :i"),
            {"i": far.usage_id},
        ).scalar_one()
        assert where == "usage_events_default"
        again = metering.charge(
            session,
            metering.UsageEvent("far", alice, "gpt-4o", input_tokens=10),
            now=now + timedelta(days=200),
        )
        assert again.status == "replayed" and again.usage_id == far.usage_id
        new = metering.charge(session, metering.UsageEvent("new", alice, "gpt-4o", input_tokens=10))
        assert new.status == "charged" and new.usage_id > far.usage_id
    with pytest.raises(HoldNotPending), db.tx() as session:
        holds.void(session, hold.id)
    with db.tx() as session:
        assert session.execute(text("SELECT count(*) FROM usage_keys")).scalar_one() == 5
        assert partitions.dangling_references(session.connection()) == []
    chain.seal_all(db.factory)
    assert _cli("verify", "--chain", "--db", db.url)[0] == 0


def test_a_partitioned_database_with_months_the_jobs_made_restores_into_a_fresh_one(
    db: Db, fresh_url: str, tmp_path: Path
) -> None:
    """PostgreSQL: months made by the jobs (CREATE … LIKE, ATTACH) and a row moved into one
    of them come back in a fresh database: same rows, keys still taken, verify passes."""
    if db.backend != "postgres":
        pytest.skip("monthly partitioning is PostgreSQL's")
    from datetime import UTC, datetime, timedelta

    from modelbank.db import partitions

    _some_business(db)
    now = datetime.now(UTC)
    with db.tx() as session:
        alice = session.execute(text("SELECT min(id) FROM users")).scalar_one()
        far = metering.charge(
            session,
            metering.UsageEvent("far2", alice, "gpt-4o", input_tokens=10),
            now=now + timedelta(days=130),
        )
    with db.tx() as session:
        made = partitions.ensure_ahead(session.connection(), now + timedelta(days=100))
    chain.seal_all(db.factory)
    try:
        before = _state(db.url)
        path = tmp_path / "backup.bin"
        code, out = _cli("backup", str(path), "--db", db.url)
        assert code == 0, out
        code, out = _cli("restore", str(path), "--db", fresh_url, "--yes")
        assert code == 0, out
        assert _state(fresh_url) == before
        engine = make_engine(fresh_url)
        try:
            with engine.begin() as conn:
                where = conn.execute(
                    text("SELECT tableoid::regclass::text FROM usage_events WHERE id = :i"),
                    {"i": far.usage_id},
                ).scalar_one()
                target = partitions.month_start(now + timedelta(days=130))
                assert where == partitions.partition_name("usage_events", target)
                assert partitions.months_ahead(conn, now + timedelta(days=100)) == 2
            from sqlalchemy.orm import Session

            with Session(engine) as session, session.begin():
                again = metering.charge(
                    session,
                    metering.UsageEvent("far2", alice, "gpt-4o", input_tokens=10),
                    now=now + timedelta(days=130),
                )
                assert again.status == "replayed"
        finally:
            engine.dispose()
    finally:
        with db.tx() as session:  # the session's schema outlives this test: the months
            # made go, their rows back to the default partition (triggers off: no new keys)
            session.execute(text("SET LOCAL session_replication_role = replica"))
            for name in made:
                parent = name.rsplit("_y", 1)[0]
                session.execute(text(f"ALTER TABLE {parent} DETACH PARTITION {name}"))
                session.execute(text(f"INSERT INTO {parent}_default SELECT * FROM {name}"))
                session.execute(text(f"DROP TABLE {name}"))
