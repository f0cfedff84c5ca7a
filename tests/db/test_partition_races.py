"""Races on PostgreSQL's month-partitioned tables (migration 0016): the unique keys moved
to side tables filled by insert triggers must still give one charge per key, one
resolution per hold, typed errors for the losers, and no deadlock or leaked database error,
also while the jobs make months. SQLite serialises writers: these tests skip there."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from modelbank.db import partitions
from modelbank.errors import DomainError
from modelbank.metering.capture import capture
from modelbank.metering.events import UsageEvent
from modelbank.metering.pipeline import charge, charge_batch
from modelbank.wallets import holds
from tests import factories
from tests.conftest import Db


def _postgres(db: Db) -> None:
    if db.backend != "postgres":
        pytest.skip("monthly partitioning is PostgreSQL's")


def _partitions(db: Db) -> set[str]:
    with db.tx() as s:
        return set(
            s.execute(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                    " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'"
                )
            ).scalars()
        )


@pytest.fixture
def months_undone(db: Db) -> Iterator[None]:
    """Drops the month partitions a test made, their rows back in the default partition
    (the schema outlives the test: later tests expect only the months the migration and
    their own jobs made)."""
    if db.backend != "postgres":
        yield
        return
    before = _partitions(db)
    yield
    made = _partitions(db) - before
    with db.tx() as s:  # their rows back to the default partition (triggers off: no keys)
        s.execute(text("SET LOCAL session_replication_role = replica"))
        for name in sorted(made):
            parent = name.rsplit("_y", 1)[0]
            s.execute(text(f"ALTER TABLE {parent} DETACH PARTITION {name}"))
            s.execute(text(f"INSERT INTO {parent}_default SELECT * FROM {name}"))
            s.execute(text(f"DROP TABLE {name}"))


def _together(n: int, work: Callable[[int], object]) -> list[object]:
    """Run ``work(i)`` for i < n on n threads released at once; results or exceptions."""
    gate = threading.Barrier(n)

    def run(i: int) -> object:
        gate.wait()
        try:
            return work(i)
        except Exception as exc:  # collected: the test asserts on each outcome
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def _balance(db: Db, user: int) -> int:
    from modelbank.wallets import service as wallets

    with db.tx() as s:
        return wallets.balance(s, user).balance_ucr  # type: ignore[attr-defined]


def _count(db: Db, sql: str, **params: object) -> int:
    with db.tx() as s:
        return int(s.execute(text(sql), params).scalar_one())


def test_one_key_from_many_threads_same_user_charges_once(db: Db) -> None:
    _postgres(db)
    with db.tx() as s:
        payer = factories.user(s, "payer", credits_ucr=50_000_000)
        factories.model(s, "gpt-4o")

    def work(i: int) -> object:
        with db.tx() as s:
            return charge(s, UsageEvent("same", payer, "gpt-4o", input_tokens=1000))

    results = _together(8, work)
    statuses = sorted(getattr(r, "status", repr(r)) for r in results)
    assert statuses == ["charged"] + ["replayed"] * 7
    assert _count(db, "SELECT count(*) FROM usage_events WHERE idempotency_key = 'same'") == 1


def test_one_key_from_many_users_charges_one_of_them(db: Db) -> None:
    _postgres(db)
    with db.tx() as s:
        payers = [factories.user(s, f"p{i}", credits_ucr=50_000_000) for i in range(6)]
        factories.model(s, "gpt-4o")

    def work(i: int) -> object:
        with db.tx() as s:
            return charge(s, UsageEvent("shared", payers[i], "gpt-4o", input_tokens=1000))

    results = _together(6, work)
    charged = [r for r in results if getattr(r, "status", None) == "charged"]
    others = [r for r in results if r not in charged]
    assert len(charged) == 1, results
    assert all(isinstance(r, DomainError) for r in others), results
    assert _count(db, "SELECT count(*) FROM usage_events WHERE idempotency_key = 'shared'") == 1


def test_batches_sharing_keys_in_any_order_charge_each_key_once(db: Db) -> None:
    _postgres(db)
    with db.tx() as s:
        payers = [factories.user(s, f"b{i}", credits_ucr=500_000_000) for i in range(6)]
        factories.model(s, "gpt-4o")
    keys = [f"bk-{k}" for k in range(40)]

    def work(i: int) -> object:
        mine = keys[:]
        random.Random(i).shuffle(mine)
        with db.tx() as s:
            return charge_batch(
                s, [UsageEvent(k, payers[i], "gpt-4o", input_tokens=100) for k in mine]
            )

    results = _together(6, work)
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    assert _count(db, "SELECT count(*) FROM usage_events") == 40
    assert _count(db, "SELECT count(*) FROM usage_keys") == 40
    charged = sum(
        1
        for batch in results
        for r in batch
        if r.status == "charged"  # type: ignore[attr-defined]
    )
    assert charged == 40


def test_capture_and_void_race_resolve_a_hold_once(db: Db) -> None:
    _postgres(db)
    with db.tx() as s:
        payer = factories.user(s, "payer", credits_ucr=50_000_000)
        factories.model(s, "gpt-4o")
    for round_ in range(5):
        with db.tx() as s:
            hold = holds.place(
                s, payer, 1_000_000, timeout_s=60, idempotency_key=f"h-{round_}", model="gpt-4o"
            )

        def work(i: int, hold_id: int = hold.id) -> object:
            with db.tx() as s:
                if i % 2:
                    return holds.void(s, hold_id)
                return capture(s, hold_id, 400_000)

        results = _together(4, work)
        wins = [r for r in results if not isinstance(r, Exception)]
        losses = [r for r in results if isinstance(r, Exception)]
        # A second capture of the same amount replays the first (key hold:<id>).
        infos = [w[0] if isinstance(w, tuple) else w for w in wins]
        assert len({(i.status, i.captured_ucr, i.usage_id) for i in infos}) == 1, results  # type: ignore[attr-defined]
        assert all(type(r).__name__ == "HoldNotPending" for r in losses), results
        assert _count(db, "SELECT count(*) FROM transfers WHERE pending_id = :h", h=hold.id) == 1


def test_month_end_charge_lands_in_its_month(db: Db) -> None:
    _postgres(db)
    with db.tx() as s:
        payer = factories.user(s, "payer", credits_ucr=50_000_000)
        factories.model(s, "gpt-4o")
    now = datetime.now(UTC)
    end = partitions.month_start(now, 1).replace(tzinfo=UTC) - timedelta(microseconds=1)
    with db.tx() as s:
        first = charge(s, UsageEvent("eom", payer, "gpt-4o", input_tokens=10), now=end)
    with db.tx() as s:
        again = charge(
            s, UsageEvent("eom", payer, "gpt-4o", input_tokens=10), now=end + timedelta(seconds=1)
        )
    assert first.status == "charged" and again.status == "replayed"
    with db.tx() as s:
        where = s.execute(
            text("SELECT tableoid::regclass::text FROM usage_events WHERE id = :i"),
            {"i": first.usage_id},
        ).scalar_one()
    assert where == partitions.partition_name("usage_events", partitions.month_start(now))


def test_jobs_making_months_while_charges_go_on(db: Db, months_undone: None) -> None:
    _postgres(db)
    with db.tx() as s:
        payers = [factories.user(s, f"c{i}", credits_ucr=500_000_000) for i in range(3)]
        factories.model(s, "gpt-4o")
    now = datetime.now(UTC)
    stop = threading.Event()

    def charger(i: int) -> list[object]:
        out: list[object] = []
        n = 0
        while not stop.is_set() and n < 200:
            n += 1
            try:
                with db.tx() as s:
                    out.append(
                        charge(s, UsageEvent(f"c{i}-{n}", payers[i], "gpt-4o", input_tokens=10))
                    )
            except Exception as exc:
                out.append(exc)
        return out

    def maker() -> list[object]:
        out: list[object] = []
        try:
            for add in range(3, 15):
                with db.tx() as s:
                    out.append(
                        partitions.ensure_ahead(s.connection(), partitions.month_start(now, add))
                    )
        except Exception as exc:
            out.append(exc)
        finally:
            stop.set()
        return out

    with ThreadPoolExecutor(4) as pool:
        chargers = [pool.submit(charger, i) for i in range(3)]
        made = pool.submit(maker).result(timeout=120)
        outcomes = [o for f in chargers for o in f.result(timeout=120)]
    assert [m for m in made if isinstance(m, Exception)] == []
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert errors == [], errors[:3]


def test_two_job_runners_making_the_same_months_both_succeed(db: Db, months_undone: None) -> None:
    """``modelbank jobs run`` is safe to run concurrently (its CLI says so): two runners
    reaching a month not made yet at the same moment must not fail on the second CREATE."""
    _postgres(db)
    later = partitions.month_start(datetime.now(UTC), 6)

    def work(i: int) -> object:
        with db.tx() as s:
            return partitions.ensure_ahead(s.connection(), later)

    for _ in range(3):
        results = _together(2, work)
        assert [r for r in results if isinstance(r, Exception)] == [], results
        made = [name for r in results for name in r]  # type: ignore[union-attr]
        assert len(made) == len(set(made))
        with db.tx() as s:
            assert partitions.months_ahead(s.connection(), later) == partitions.MONTHS_AHEAD
        later = partitions.month_start(later, 3)


def test_two_group_committers_sharing_keys_charge_each_once(db: Db) -> None:
    """Two group committers (two API processes) get the same keys for different users at
    once: each key is charged once, the losers get a typed error, never a database one."""
    from modelbank.metering.group import GroupCommitter

    _postgres(db)
    with db.tx() as s:
        payers = [factories.user(s, f"g{i}", credits_ucr=500_000_000) for i in range(2)]
        factories.model(s, "gpt-4o")
    keys = [f"gk-{k}" for k in range(60)]
    with (
        GroupCommitter(db.factory, max_wait_s=0.005, max_batch=16) as first,
        GroupCommitter(db.factory, max_wait_s=0.005, max_batch=16) as second,
    ):
        futures = []
        for k in keys:
            for i, committer in enumerate((first, second)):
                event = UsageEvent(k, payers[i], "gpt-4o", input_tokens=100)
                futures.append(committer.submit_future(event))
        outcomes: list[object] = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=60))
            except Exception as exc:
                outcomes.append(exc)
    charged = [o for o in outcomes if getattr(o, "status", None) == "charged"]
    others = [o for o in outcomes if o not in charged]
    assert len(charged) == 60
    assert all(isinstance(o, DomainError) for o in others), {type(o) for o in others}
    assert _count(db, "SELECT count(*) FROM usage_events") == 60
    assert _count(db, "SELECT count(*) FROM usage_keys") == 60


def test_a_hold_placed_at_month_end_is_captured_next_month_once(db: Db) -> None:
    _postgres(db)
    with db.tx() as s:
        payer = factories.user(s, "payer", credits_ucr=50_000_000)
        factories.model(s, "gpt-4o")
    now = datetime.now(UTC)
    start = partitions.month_start(now, 1).replace(tzinfo=UTC)
    end = start - timedelta(microseconds=1)
    with db.tx() as s:
        hold = holds.place(
            s, payer, 1_000_000, timeout_s=60, idempotency_key="eom-h", model="gpt-4o", now=end
        )
    with db.tx() as s:
        info, result = capture(s, hold.id, 300_000, now=start)
    assert result.status == "charged" and info.status == "posted"
    with pytest.raises(DomainError), db.tx() as s:
        holds.void(s, hold.id, now=start)
    with db.tx() as s:
        rows = s.execute(
            text(
                "SELECT tableoid::regclass::text, created_at FROM transfers"
                " WHERE id = :h OR pending_id = :h ORDER BY id"
            ),
            {"h": hold.id},
        ).all()
    assert [r[0] for r in rows] == [
        partitions.partition_name("transfers", partitions.month_start(now)),
        partitions.partition_name("transfers", partitions.month_start(now, 1)),
    ]
    assert _balance(db, payer) == 50_000_000 - 300_000


def test_jobs_making_months_while_users_sign_up(db: Db, months_undone: None) -> None:
    """A month's partitions take SHARE ROW EXCLUSIVE on the tables their foreign keys name
    (accounts, then users, models, resources): a sign-up (users, then accounts) at the same
    moment must not deadlock with them."""
    _postgres(db)
    now = datetime.now(UTC)
    stop = threading.Event()

    def signer(i: int) -> list[object]:
        out: list[object] = []
        n = 0
        while not stop.is_set() and n < 300:
            n += 1
            try:
                with db.tx() as s:
                    out.append(factories.user(s, f"s{i}-{n}", credits_ucr=1_000))
            except Exception as exc:
                out.append(exc)
        return out

    def maker() -> list[object]:
        out: list[object] = []
        try:
            for add in range(3, 30):
                with db.tx() as s:
                    out.append(
                        partitions.ensure_ahead(s.connection(), partitions.month_start(now, add))
                    )
        except Exception as exc:
            out.append(exc)
        finally:
            stop.set()
        return out

    with ThreadPoolExecutor(4) as pool:
        signers = [pool.submit(signer, i) for i in range(3)]
        made = pool.submit(maker).result(timeout=300)
        outcomes = [o for f in signers for o in f.result(timeout=300)]
    assert [m for m in made if isinstance(m, Exception)] == []
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert errors == [], errors[:3]


def test_a_row_entering_the_default_partition_while_its_month_is_made(
    db: Db, months_undone: None
) -> None:
    """The jobs make a month whose rows sit in the default partition (the jobs had not run
    for months) while a charge of that month is being written there: the month is made
    and the charge lands in it, the jobs do not fail on the default partition's check."""
    _postgres(db)
    with db.tx() as s:
        payer = factories.user(s, "payer", credits_ucr=50_000_000)
        factories.model(s, "gpt-4o")
    now = datetime.now(UTC)
    late = partitions.month_start(now, 8).replace(tzinfo=UTC) + timedelta(days=3)
    with db.tx() as s:  # one row of that month already in the default partition
        charge(s, UsageEvent("early", payer, "gpt-4o", input_tokens=10), now=late)
    writing = db.factory()
    writing.begin()
    pending = charge(writing, UsageEvent("racing", payer, "gpt-4o", input_tokens=10), now=late)
    outcome: list[object] = []

    def make() -> None:
        try:
            with db.tx() as s:
                outcome.append(partitions.ensure_ahead(s.connection(), late))
        except Exception as exc:
            outcome.append(exc)

    maker = threading.Thread(target=make)
    maker.start()
    maker.join(timeout=1.0)  # waits on the open charge
    writing.commit()
    writing.close()
    maker.join(timeout=60)
    assert not isinstance(outcome[0], Exception), outcome
    with db.tx() as s:
        where = s.execute(
            text("SELECT tableoid::regclass::text FROM usage_events WHERE id = :i"),
            {"i": pending.usage_id},
        ).scalar_one()
    assert where == partitions.partition_name("usage_events", partitions.month_start(late))


def test_down_and_up_with_rows_in_the_default_and_in_months_the_jobs_made(
    db: Db, months_undone: None
) -> None:
    """Downgrade 0016 and upgrade again with a row the jobs moved into a month they made, a
    row in the default partition and a resolved hold: same rows, keys still taken, the hold
    still resolved once, no reference dangling."""
    from alembic import command

    from modelbank.db.migrate import alembic_config, upgrade

    _postgres(db)
    with db.tx() as s:
        payer = factories.user(s, "payer", credits_ucr=50_000_000)
        factories.model(s, "gpt-4o")
    now = datetime.now(UTC)
    moved_at = partitions.month_start(now, 5).replace(tzinfo=UTC) + timedelta(days=1)
    default_at = partitions.month_start(now, 12).replace(tzinfo=UTC) + timedelta(days=1)
    with db.tx() as s:
        charge(s, UsageEvent("now", payer, "gpt-4o", input_tokens=10))
        charge(s, UsageEvent("moved", payer, "gpt-4o", input_tokens=10), now=moved_at)
        charge(s, UsageEvent("default", payer, "gpt-4o", input_tokens=10), now=default_at)
        hold = holds.place(s, payer, 1_000, timeout_s=60, idempotency_key="du-h")
    with db.tx() as s:
        holds.void(s, hold.id)
    with db.tx() as s:
        partitions.ensure_ahead(s.connection(), moved_at)

    def counts() -> tuple[int, ...]:
        with db.tx() as s:
            return tuple(
                int(s.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
                for t in ("usage_events", "transfers", "route_logs")
            )

    before = counts()
    config = alembic_config()
    with db.engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0015")
        connection.commit()
    assert counts() == before
    upgrade(db.engine)
    assert counts() == before
    with db.tx() as s:
        assert _count(db, "SELECT count(*) FROM usage_keys") == 3
        for key, at in (("now", None), ("moved", moved_at), ("default", default_at)):
            again = charge(s, UsageEvent(key, payer, "gpt-4o", input_tokens=10), now=at)
            assert again.status == "replayed", key
        assert partitions.dangling_references(s.connection()) == []
    with pytest.raises(DomainError), db.tx() as s:
        holds.void(s, hold.id)
