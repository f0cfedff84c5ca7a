"""Monthly partitioning on PostgreSQL (migration 0016, :mod:`modelbank.db.partitions`):
rows land in their month's partition, the unique keys that carry the money guarantees hold
across partitions (side tables), a month's rows move out of the default partition when the
jobs make it, verify checks the foreign keys partitioning dropped, and a downgrade and
upgrade keep every row and key. SQLite has one table each: these tests skip there."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from modelbank import jobs
from modelbank.db import partitions
from modelbank.db.migrate import alembic_config, upgrade
from modelbank.metering.events import UsageEvent
from modelbank.metering.pipeline import charge
from modelbank.secrets import SecretBox
from modelbank.wallets import holds
from tests import factories
from tests.api.conftest import TEST_SECRET_KEY
from tests.conftest import Db

NOW = datetime.now(UTC)
BOX = SecretBox(TEST_SECRET_KEY)
YEAR = timedelta(days=365)


def _postgres(db: Db) -> None:
    if db.backend != "postgres":
        pytest.skip("monthly partitioning is PostgreSQL's (SQLite keeps one table each)")


def _world(db: Db) -> tuple[int, int]:
    with db.tx() as s:
        payer = factories.user(s, "payer", credits_ucr=50_000_000)
        model = factories.model(s, "gpt-4o")
    return payer, model


def _where(db: Db, table: str, column: str, value: object) -> list[str]:
    with db.tx() as s:
        return [
            str(name)
            for name in s.execute(
                text(f"SELECT tableoid::regclass FROM {table} WHERE {column} = :v"), {"v": value}
            ).scalars()
        ]


def test_rows_land_in_their_month_and_a_key_is_charged_once(db: Db) -> None:
    _postgres(db)
    payer, _ = _world(db)
    event = UsageEvent("k-1", payer, "gpt-4o", input_tokens=1000, output_tokens=100)
    with db.tx() as s:
        first = charge(s, event)
    with db.tx() as s:
        again = charge(s, event)
    assert first.status == "charged" and again.status == "replayed"
    assert again.usage_id == first.usage_id
    month = partitions.partition_name("usage_events", partitions.month_start(NOW))
    assert _where(db, "usage_events", "idempotency_key", "k-1") == [month]
    with db.tx() as s:
        keys = s.execute(text("SELECT usage_id FROM usage_keys WHERE idempotency_key = 'k-1'"))
        assert keys.scalars().all() == [first.usage_id]
        transfer_month = {
            str(n)
            for n in s.execute(
                text("SELECT tableoid::regclass FROM transfers WHERE ref_id = :u"),
                {"u": first.usage_id},
            ).scalars()
        }
    assert transfer_month == {partitions.partition_name("transfers", partitions.month_start(NOW))}


def test_a_key_stored_in_another_month_is_still_taken(db: Db) -> None:
    """The guarantee crosses partitions: a row of last year (the default partition) and a
    new row with its key cannot both exist."""
    _postgres(db)
    payer, _ = _world(db)
    with db.tx() as s:
        first = charge(s, UsageEvent("old-key", payer, "gpt-4o", input_tokens=10))
    with (
        pytest.raises(DBAPIError, match=r"created_at of usage_events_y\d+m\d+ cannot"),
        db.tx() as s,
    ):
        s.execute(
            text("UPDATE usage_events SET created_at = created_at - interval '400 days'"),
        )
    with db.tx() as s:  # a copy dated last year, under another key: no month that old
        s.execute(
            text(
                "INSERT INTO usage_events SELECT nextval('usage_events_id_seq'), 'older-key',"
                " request_hash, user_id, model_id, price_version_id, usage_type, input_tokens,"
                " cached_input_tokens, output_tokens, units, 0, cost_uusd, 0, 0,"
                " balance_after_ucr, earnings_note, occurred_at, :t, metadata, resource_id,"
                " usage_estimated FROM usage_events WHERE id = :i"
            ),
            {"t": (NOW - YEAR).replace(tzinfo=None), "i": first.usage_id},
        )
    assert _where(db, "usage_events", "idempotency_key", "older-key") == ["usage_events_default"]
    with db.tx() as s:
        again = charge(s, UsageEvent("old-key", payer, "gpt-4o", input_tokens=10))
        older = charge(s, UsageEvent("older-key", payer, "gpt-4o", input_tokens=10))
    assert again.status == "replayed" and again.usage_id == first.usage_id
    assert older.status != "charged"  # found in last year's partition: replayed or refused
    with db.tx() as s:
        assert s.execute(text("SELECT count(*) FROM usage_events")).scalar_one() == 2


def test_transfer_keys_and_hold_resolutions_stay_unique(db: Db) -> None:
    _postgres(db)
    payer, _ = _world(db)
    with db.tx() as s:
        hold = holds.place(s, payer, 1_000_000, timeout_s=60, idempotency_key="h-1")
    with db.tx() as s:
        holds.void(s, hold.id)
    with db.tx() as s:
        row = (
            s.execute(text("SELECT * FROM transfers WHERE pending_id = :h"), {"h": hold.id})
            .mappings()
            .one()
        )
    copy = {k: v for k, v in row.items() if k not in ("id", "metadata")}
    copy["idempotency_key"] = None
    columns = ", ".join(copy)
    values = ", ".join(f":{k}" for k in copy)
    # A second resolution of the same hold, written past every code path: the side table
    # refuses it under the old constraint's name.
    with pytest.raises(IntegrityError, match="uq_transfers_pending_id"), db.tx() as s:
        s.execute(text(f"INSERT INTO transfers ({columns}) VALUES ({values})"), copy)
    seed = _where(db, "transfers", "idempotency_key", "grant:seed:payer")
    assert seed == []  # the factory's key is scoped; find the stored one
    with db.tx() as s:
        stored = (
            s.execute(text("SELECT * FROM transfers WHERE idempotency_key IS NOT NULL LIMIT 1"))
            .mappings()
            .one()
        )
    twin = {
        k: v for k, v in stored.items() if k not in ("id", "chain_seq", "chain_hash", "metadata")
    }
    columns = ", ".join(twin)
    values = ", ".join(f":{k}" for k in twin)
    with pytest.raises(IntegrityError, match="uq_transfers_idempotency_key"), db.tx() as s:
        s.execute(text(f"INSERT INTO transfers ({columns}) VALUES ({values})"), twin)


def test_jobs_make_months_ahead_and_move_rows_out_of_the_default(db: Db) -> None:
    _postgres(db)
    payer, _ = _world(db)
    with db.tx() as s:
        assert partitions.months_ahead(s.connection(), NOW) >= partitions.MONTHS_AHEAD
    with db.tx() as s:  # four months ahead: no month made yet, so the default partition
        early = charge(
            s,
            UsageEvent("future-key", payer, "gpt-4o", input_tokens=10),
            now=NOW + timedelta(days=125),
        )
    assert _where(db, "usage_events", "id", early.usage_id) == ["usage_events_default"]
    later = NOW + timedelta(days=95)  # three and a bit months on: the jobs make two more
    report = jobs.run_once(db.factory, box=BOX, now=later, deliver=False)
    target = partitions.month_start(NOW + timedelta(days=125))
    assert report.partitions_made >= 3
    assert _where(db, "usage_events", "id", early.usage_id) == [
        partitions.partition_name("usage_events", target)
    ]
    with db.tx() as s:
        assert partitions.months_ahead(s.connection(), later) == partitions.MONTHS_AHEAD
        # the key stayed claimed through the move
        assert (
            s.execute(
                text("SELECT usage_id FROM usage_keys WHERE idempotency_key = 'future-key'")
            ).scalar_one()
            == early.usage_id
        )
        again = charge(s, UsageEvent("future-key", payer, "gpt-4o", input_tokens=10))
    assert again.status == "replayed"
    assert jobs.run_once(db.factory, box=BOX, now=later, deliver=False).partitions_made == 0


def test_verify_names_a_reference_to_a_missing_transfer(db: Db) -> None:
    _postgres(db)
    payer, _ = _world(db)
    with db.tx() as s:
        grant_transfer = s.execute(
            text("SELECT transfer_id FROM grants WHERE user_id = :u"), {"u": payer}
        ).scalar_one()
        assert partitions.dangling_references(s.connection()) == []
        # A copy of the grant pointing at a transfer that never existed (no FK stops it now)
        s.execute(
            text("UPDATE grants SET transfer_id = :t WHERE user_id = :u"),
            {"t": grant_transfer + 10**9, "u": payer},
        )
        found = partitions.dangling_references(s.connection())
        assert [(d.table, d.column, d.transfer_id) for d in found] == [
            ("grants", "transfer_id", grant_transfer + 10**9)
        ]
        s.rollback()


def test_down_and_up_keep_every_row_and_key(db: Db) -> None:
    _postgres(db)
    payer, _ = _world(db)
    with db.tx() as s:
        for k in range(3):
            charge(s, UsageEvent(f"du-{k}", payer, "gpt-4o", input_tokens=100 + k))

    def counts() -> tuple[int, int, int]:
        with db.tx() as s:
            return tuple(  # type: ignore[return-value]
                s.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in ("usage_events", "transfers", "route_logs")
            )

    before = counts()
    config = alembic_config()
    with db.engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0015")
        connection.commit()
    assert counts() == before
    with db.tx() as s:
        assert not partitions.is_partitioned(s.connection(), "usage_events")
    with db.tx() as s:  # the unique constraints are back on the tables themselves
        names = s.execute(
            text(
                "SELECT conname FROM pg_constraint WHERE contype = 'u'"
                " AND conrelid IN ('usage_events'::regclass, 'transfers'::regclass,"
                " 'route_logs'::regclass) ORDER BY conname"
            )
        ).scalars()
        assert list(names) == [
            "uq_route_logs_request_id",
            "uq_transfers_idempotency_key",
            "uq_transfers_pending_id",
            "uq_usage_events_idempotency_key",
        ]
    upgrade(db.engine)
    assert counts() == before
    with db.tx() as s:
        assert partitions.is_partitioned(s.connection(), "usage_events")
        assert s.execute(text("SELECT count(*) FROM usage_keys")).scalar_one() == before[0]
        replay = charge(s, UsageEvent("du-1", payer, "gpt-4o", input_tokens=101))
    assert replay.status == "replayed"
