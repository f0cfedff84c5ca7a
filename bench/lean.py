"""The lean physical-limit reference of a full charge (DESIGN §16), for ``bench/charge.py``.

A minimal schema and the plain driver (``sqlite3``; psycopg 3 for PostgreSQL), no ORM, no
SQLAlchemy, no price table, no grants, no pending columns, no foreign keys::

    accounts  (id integer pk, balance bigint)
    usage     (id integer pk, ascending: a time-ordered surrogate; key_hash bigint, key text,
               user_id, model_id, charge, cost)
    transfers (id integer pk, ascending; debit, credit, amount, usage_id)

Idempotency is an index probe on a 64-bit hash of the key (``blake2b``, 8-byte entries, not
UNIQUE) followed by a comparison of the stored key, so no random text key is indexed; the
single writer (SQLite's ``BEGIN IMMEDIATE``; one connection, row locks on PostgreSQL) is what
makes check-then-insert safe here. One event is: the idempotency check, the guarded wallet
debit (``balance >= charge`` in the UPDATE's WHERE clause is the balance check), the usage
insert, up to three transfer inserts (charge wallet → revenue, earning revenue → creator,
fee revenue → fees) and the revenue / earnings / fees credits. Charges are computed in
Python from the price list the caller gives (the price sheet held in memory).

Variants (``txn`` runs a chunk of events in one transaction):

* :class:`SqliteLean`, the same PRAGMAs as :mod:`modelbank.db.engine` (WAL,
  synchronous=NORMAL, foreign_keys=ON, BEGIN IMMEDIATE). ``events``: the statements above
  per event, one or many events per transaction (DESIGN §16's ~16,000/s and ~71,000/s).
  ``set``: a batch set-based, as ``charge_batch`` works: one key probe and one balance read
  per batch, the guard checked in Python, executemany inserts with ids assigned under the
  write lock, one UPDATE per account touched.
* :class:`PostgresLean`. ``statements``: five statements per event from the application
  (multi-row VALUES for the transfers and the credits) in BEGIN … COMMIT, about seven round
  trips. ``one``: the whole event as ONE statement (data-modifying CTEs whose inserts and
  credits hang off the guarded debit's row) in autocommit, one round trip (DESIGN §16's
  ~2,810/s as a server-side call). ``set``: a batch set-based in six round trips (BEGIN, key
  probe, balances FOR UPDATE, one UPDATE of every account touched, one INSERT of the usage
  rows and their transfers, COMMIT). Per-event statements in one long PostgreSQL
  transaction, even pipelined, stack row versions on the hot accounts and slow down as the
  run goes on, so the batch limit there is the set-based one (DESIGN §16: aggregate balance
  changes per batch).
"""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

FEE_BPS = 500  # the third posting: 5% of each charge to the fees account (as the raw loop)
EARN_BPS = 1_600  # creator's share: 20% x chat 0.8, as modelbank's default rule

REVENUE, FEES, CREATOR = 1, 2, 3  # account ids; wallets follow
FIRST_WALLET = 10


class EventSpec(Protocol):
    """One synthetic event (``bench/charge.py``'s ``Spec``): user and model are indexes."""

    @property
    def key(self) -> str: ...
    @property
    def user(self) -> int: ...
    @property
    def model(self) -> int: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def cached_input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...


# (charge µcr per 1M input / output / cached input tokens, cost µUSD per 1M …) per model
Price = tuple[int, int, int, int, int, int]


class LeanBank(Protocol):
    def txn(self, chunk: Sequence[EventSpec]) -> None: ...
    def check(self, expected: int) -> None: ...
    def close(self) -> None: ...


def key_hash(key: str) -> int:
    """A signed 64-bit hash of the idempotency key (fits SQLite INTEGER and bigint)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), signed=True)


class Event:
    """One event's row values: key, hash, ids, and the amounts the raw loop computes."""

    __slots__ = ("charge", "cost", "earning", "fee", "hash", "key", "model", "user", "wallet")

    def __init__(self, spec: EventSpec, price: Price) -> None:
        pin, pout, pcache, cin, cout, ccache = price
        fresh = spec.input_tokens - spec.cached_input_tokens
        cached, out = spec.cached_input_tokens, spec.output_tokens
        self.key = spec.key
        self.hash = key_hash(spec.key)
        self.user = spec.user + 1
        self.model = spec.model + 1
        self.wallet = FIRST_WALLET + spec.user
        self.charge = (fresh * pin + cached * pcache + out * pout + 500_000) // 1_000_000
        self.cost = (fresh * cin + cached * ccache + out * cout + 500_000) // 1_000_000
        self.earning = self.charge * EARN_BPS // 10_000
        self.fee = self.charge * FEE_BPS // 10_000

    @property
    def net(self) -> int:
        """What stays on the revenue account."""
        return self.charge - self.earning - self.fee

    def legs(self) -> list[tuple[int, int, int]]:
        """The transfers (debit, credit, amount), zero amounts left out."""
        return [
            leg
            for leg in (
                (self.wallet, REVENUE, self.charge),
                (REVENUE, CREATOR, self.earning),
                (REVENUE, FEES, self.fee),
            )
            if leg[2] > 0
        ]


def amounts(spec: EventSpec, price: Price) -> tuple[int, int, int, int]:
    """(charge, cost, earning, fee) of one event."""
    e = Event(spec, price)
    return e.charge, e.cost, e.earning, e.fee


def _fresh_and_deltas(
    events: list[Event], seen: set[tuple[int, str]], available: dict[int, int]
) -> tuple[list[Event], dict[int, int]]:
    """A batch decided in Python: replays dropped, each debit checked against the wallet's
    balance left by the events before it; the balance change of every account touched."""
    fresh: list[Event] = []
    deltas: dict[int, int] = defaultdict(int)
    for e in events:
        if (e.hash, e.key) in seen:
            continue
        seen.add((e.hash, e.key))
        if e.charge > available[e.wallet]:
            raise RuntimeError(f"insufficient funds in wallet {e.wallet}")
        available[e.wallet] -= e.charge
        deltas[e.wallet] -= e.charge
        deltas[REVENUE] += e.net
        deltas[CREATOR] += e.earning
        deltas[FEES] += e.fee
        fresh.append(e)
    return fresh, deltas


# ---------------------------------------------------------------- SQLite

SQLITE_SCHEMA = """
CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance BIGINT NOT NULL);
CREATE TABLE usage (
    id INTEGER PRIMARY KEY,
    key_hash BIGINT NOT NULL,
    key TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    model_id INTEGER NOT NULL,
    charge BIGINT NOT NULL,
    cost BIGINT NOT NULL
);
CREATE INDEX ix_usage_key_hash ON usage (key_hash);
CREATE TABLE transfers (
    id INTEGER PRIMARY KEY,
    debit INTEGER NOT NULL,
    credit INTEGER NOT NULL,
    amount BIGINT NOT NULL,
    usage_id INTEGER NOT NULL
);
"""

SQ_SEEN = "SELECT key FROM usage WHERE key_hash = ?"
SQ_DEBIT = "UPDATE accounts SET balance = balance - ?1 WHERE id = ?2 AND balance >= ?1"
SQ_USAGE = (
    "INSERT INTO usage (key_hash, key, user_id, model_id, charge, cost) VALUES (?, ?, ?, ?, ?, ?)"
)
SQ_USAGE_WITH_ID = (
    "INSERT INTO usage (id, key_hash, key, user_id, model_id, charge, cost)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
SQ_TRANSFER = "INSERT INTO transfers (debit, credit, amount, usage_id) VALUES (?, ?, ?, ?)"
SQ_CREDIT = "UPDATE accounts SET balance = balance + ? WHERE id = ?"


class SqliteLean:
    """The lean reference on a SQLite file; ``mode`` ``events`` or ``set`` (see the module)."""

    def __init__(
        self, path: Path, prices: Sequence[Price], users: int, grant: int, mode: str = "events"
    ) -> None:
        self.prices = prices
        self.total = users * grant
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in (
            "journal_mode = WAL",
            "synchronous = NORMAL",
            "foreign_keys = ON",
            "busy_timeout = 30000",
        ):
            self.conn.execute(f"PRAGMA {pragma}")
        self.conn.executescript(SQLITE_SCHEMA)
        self.cur = self.conn.cursor()
        self.cur.execute("BEGIN IMMEDIATE")
        self.cur.executemany(
            "INSERT INTO accounts (id, balance) VALUES (?, ?)",
            [(REVENUE, 0), (FEES, 0), (CREATOR, 0)]
            + [(FIRST_WALLET + u, grant) for u in range(users)],
        )
        self.cur.execute("COMMIT")
        self.txn: Callable[[Sequence[EventSpec]], None] = {
            "events": self._events,
            "set": self._set,
        }[mode]

    def charge(self, spec: EventSpec) -> None:
        """One event, in the caller's transaction."""
        cur = self.cur
        e = Event(spec, self.prices[spec.model])
        for (stored,) in cur.execute(SQ_SEEN, (e.hash,)):
            if stored == e.key:
                return  # a replay: nothing to write
        if cur.execute(SQ_DEBIT, (e.charge, e.wallet)).rowcount != 1:
            raise RuntimeError(f"insufficient funds in wallet {e.wallet}")
        cur.execute(SQ_USAGE, (e.hash, e.key, e.user, e.model, e.charge, e.cost))
        usage_id = cur.lastrowid
        for debit, credit, amount in e.legs():
            cur.execute(SQ_TRANSFER, (debit, credit, amount, usage_id))
        for amount, account in ((e.net, REVENUE), (e.earning, CREATOR), (e.fee, FEES)):
            if amount:
                cur.execute(SQ_CREDIT, (amount, account))

    def _events(self, chunk: Sequence[EventSpec]) -> None:
        cur = self.cur
        cur.execute("BEGIN IMMEDIATE")
        for spec in chunk:
            self.charge(spec)
        cur.execute("COMMIT")

    def _set(self, chunk: Sequence[EventSpec]) -> None:
        cur = self.cur
        events = [Event(spec, self.prices[spec.model]) for spec in chunk]
        cur.execute("BEGIN IMMEDIATE")
        hashes = sorted({e.hash for e in events})
        seen = set(
            cur.execute(
                "SELECT key_hash, key FROM usage WHERE key_hash IN"
                f" ({','.join('?' * len(hashes))})",
                hashes,
            )
        )
        wallets = sorted({e.wallet for e in events})
        available = dict(
            cur.execute(
                f"SELECT id, balance FROM accounts WHERE id IN ({','.join('?' * len(wallets))})",
                wallets,
            )
        )
        fresh, deltas = _fresh_and_deltas(events, seen, available)
        next_id = cur.execute("SELECT coalesce(max(id), 0) + 1 FROM usage").fetchone()[0]
        usage_rows: list[tuple[Any, ...]] = []
        transfer_rows: list[tuple[int, int, int, int]] = []
        for usage_id, e in enumerate(fresh, start=next_id):
            usage_rows.append((usage_id, e.hash, e.key, e.user, e.model, e.charge, e.cost))
            transfer_rows.extend((d, c, a, usage_id) for d, c, a in e.legs())
        cur.executemany(SQ_USAGE_WITH_ID, usage_rows)
        cur.executemany(SQ_TRANSFER, transfer_rows)
        cur.executemany(SQ_CREDIT, [(d, a) for a, d in sorted(deltas.items()) if d])
        cur.execute("COMMIT")

    def check(self, expected: int) -> None:
        count = self.conn.execute("SELECT count(*) FROM usage").fetchone()[0]
        total, lowest = self.conn.execute(
            "SELECT sum(balance), min(balance) FROM accounts"
        ).fetchone()
        if count != expected or total != self.total or lowest < 0:
            raise RuntimeError(
                f"lean SQLite run broken: {count} rows (expected {expected}),"
                f" Σ balance {total} (expected {self.total}), lowest {lowest}"
            )

    def close(self) -> None:
        self.conn.close()


# ---------------------------------------------------------------- PostgreSQL

PG_SCHEMA = """
CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE usage (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_hash bigint NOT NULL,
    key text NOT NULL,
    user_id bigint NOT NULL,
    model_id bigint NOT NULL,
    charge bigint NOT NULL,
    cost bigint NOT NULL
);
CREATE INDEX ix_usage_key_hash ON usage (key_hash);
CREATE TABLE transfers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    debit bigint NOT NULL,
    credit bigint NOT NULL,
    amount bigint NOT NULL,
    usage_id bigint NOT NULL
);
"""

PG_SEEN = "SELECT key FROM usage WHERE key_hash = %s"
PG_DEBIT = (
    "UPDATE accounts SET balance = balance - %(c)s WHERE id = %(w)s AND balance >= %(c)s"
    " RETURNING balance"
)
PG_USAGE = (
    "INSERT INTO usage (key_hash, key, user_id, model_id, charge, cost)"
    " VALUES (%(h)s, %(k)s, %(u)s, %(m)s, %(c)s, %(cost)s) RETURNING id"
)
PG_TRANSFERS = (
    "INSERT INTO transfers (debit, credit, amount, usage_id)"
    " SELECT v.d, v.c, v.a, %(id)s FROM (VALUES (%(w)s::bigint, %(rev)s::bigint, %(c)s::bigint),"
    " (%(rev)s, %(cre)s, %(e)s), (%(rev)s, %(fees)s, %(f)s)) AS v (d, c, a) WHERE v.a > 0"
)
PG_CREDITS = (
    "UPDATE accounts SET balance = accounts.balance + v.delta"
    " FROM (VALUES (%(rev)s::bigint, %(net)s::bigint), (%(cre)s, %(e)s), (%(fees)s, %(f)s))"
    " AS v (id, delta) WHERE accounts.id = v.id AND v.delta <> 0"
)
# The whole event as one statement: every write hangs off the guarded debit's row, so a
# replay (seen) or a short wallet writes nothing. Returns (balance after, usage id, seen).
PG_ONE = """
WITH seen AS (SELECT 1 FROM usage WHERE key_hash = %(h)s AND key = %(k)s),
debit AS (
    UPDATE accounts SET balance = balance - %(c)s
    WHERE id = %(w)s AND balance >= %(c)s AND NOT EXISTS (SELECT 1 FROM seen)
    RETURNING balance
),
u AS (
    INSERT INTO usage (key_hash, key, user_id, model_id, charge, cost)
    SELECT %(h)s, %(k)s, %(u)s, %(m)s, %(c)s, %(cost)s FROM debit
    RETURNING id
),
t AS (
    INSERT INTO transfers (debit, credit, amount, usage_id)
    SELECT v.d, v.c, v.a, u.id FROM u,
        (VALUES (%(w)s::bigint, %(rev)s::bigint, %(c)s::bigint), (%(rev)s, %(cre)s, %(e)s),
                (%(rev)s, %(fees)s, %(f)s)) AS v (d, c, a)
    WHERE v.a > 0
),
cr AS (
    UPDATE accounts SET balance = accounts.balance + v.delta
    FROM u, (VALUES (%(rev)s::bigint, %(net)s::bigint), (%(cre)s, %(e)s), (%(fees)s, %(f)s))
        AS v (id, delta)
    WHERE accounts.id = v.id AND v.delta <> 0
)
SELECT (SELECT balance FROM debit), (SELECT id FROM u), EXISTS (SELECT 1 FROM seen)
"""
PG_SET_SEEN = "SELECT key_hash, key FROM usage WHERE key_hash = ANY(%s)"
PG_SET_BALANCES = (
    "SELECT id, balance FROM accounts WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE"
)
PG_SET_DELTAS = (
    "UPDATE accounts SET balance = accounts.balance + v.delta"
    " FROM unnest(%s::bigint[], %s::bigint[]) AS v (id, delta) WHERE accounts.id = v.id"
)
# A batch's usage rows and their transfers in one statement.
PG_SET_INSERT = """
WITH ev AS (
    SELECT * FROM unnest(%(h)s::bigint[], %(k)s::text[], %(u)s::bigint[], %(m)s::bigint[],
        %(c)s::bigint[], %(cost)s::bigint[], %(w)s::bigint[], %(e)s::bigint[], %(f)s::bigint[])
        AS ev (h, k, u, m, c, cost, w, e, f)
),
ins AS (
    INSERT INTO usage (key_hash, key, user_id, model_id, charge, cost)
    SELECT h, k, u, m, c, cost FROM ev
    RETURNING id, key
)
INSERT INTO transfers (debit, credit, amount, usage_id)
SELECT v.d, v.c, v.a, ins.id FROM ins JOIN ev ON ev.k = ins.key
CROSS JOIN LATERAL (VALUES (ev.w, %(rev)s::bigint, ev.c), (%(rev)s, %(cre)s, ev.e),
    (%(rev)s, %(fees)s, ev.f)) AS v (d, c, a)
WHERE v.a > 0
"""


class PostgresLean:
    """The lean reference in a fresh PostgreSQL schema (dropped by :meth:`close`);
    ``mode`` ``statements``, ``one`` or ``set`` (see the module)."""

    def __init__(
        self, url: str, mode: str, prices: Sequence[Price], users: int, grant: int
    ) -> None:
        import psycopg  # only needed with --postgres

        self.prices = prices
        self.total = users * grant
        self.schema = f"mb_bench_lean_{uuid.uuid4().hex[:8]}"
        url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.admin = psycopg.connect(url, autocommit=True)
        self.admin.execute(f'CREATE SCHEMA "{self.schema}"')
        try:
            self.conn = psycopg.connect(
                url, autocommit=True, options=f"-csearch_path={self.schema}"
            )
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.execute(PG_SCHEMA)
                cur.executemany(
                    "INSERT INTO accounts (id, balance) VALUES (%s, %s)",
                    [(REVENUE, 0), (FEES, 0), (CREATOR, 0)]
                    + [(FIRST_WALLET + u, grant) for u in range(users)],
                )
            self.conn.execute("ANALYZE")
            self.conn.autocommit = mode == "one"
        except BaseException:
            self.admin.execute(f'DROP SCHEMA "{self.schema}" CASCADE')
            self.admin.close()
            raise
        self.cur = self.conn.cursor()
        self.txn: Callable[[Sequence[EventSpec]], None] = {
            "statements": self._statements,
            "one": self._one,
            "set": self._set,
        }[mode]

    def _params(self, spec: EventSpec) -> dict[str, Any]:
        e = Event(spec, self.prices[spec.model])
        return {
            "h": e.hash,
            "k": e.key,
            "u": e.user,
            "m": e.model,
            "w": e.wallet,
            "c": e.charge,
            "cost": e.cost,
            "e": e.earning,
            "f": e.fee,
            "net": e.net,
            "rev": REVENUE,
            "cre": CREATOR,
            "fees": FEES,
        }

    def _statements(self, chunk: Sequence[EventSpec]) -> None:
        cur = self.cur
        for spec in chunk:
            p = self._params(spec)
            if any(stored == spec.key for (stored,) in cur.execute(PG_SEEN, (p["h"],))):
                continue  # a replay
            if cur.execute(PG_DEBIT, p).fetchone() is None:
                raise RuntimeError(f"insufficient funds in wallet {p['w']}")
            row = cur.execute(PG_USAGE, p).fetchone()
            assert row is not None
            p["id"] = row[0]
            cur.execute(PG_TRANSFERS, p)
            cur.execute(PG_CREDITS, p)
        self.conn.commit()

    def _one(self, chunk: Sequence[EventSpec]) -> None:
        cur = self.cur
        for spec in chunk:
            row = cur.execute(PG_ONE, self._params(spec)).fetchone()
            if row is None or (row[1] is None and not row[2]):
                raise RuntimeError(f"insufficient funds for {spec.key}")

    def _set(self, chunk: Sequence[EventSpec]) -> None:
        cur = self.cur
        events = [Event(spec, self.prices[spec.model]) for spec in chunk]
        seen = set(cur.execute(PG_SET_SEEN, ([e.hash for e in events],)))
        wallets = sorted({e.wallet for e in events})
        available: dict[int, int] = dict(cur.execute(PG_SET_BALANCES, (wallets,)))
        fresh, deltas = _fresh_and_deltas(events, seen, available)
        ids = sorted(deltas)
        cur.execute(PG_SET_DELTAS, (ids, [deltas[i] for i in ids]))
        cur.execute(
            PG_SET_INSERT,
            {
                "h": [e.hash for e in fresh],
                "k": [e.key for e in fresh],
                "u": [e.user for e in fresh],
                "m": [e.model for e in fresh],
                "c": [e.charge for e in fresh],
                "cost": [e.cost for e in fresh],
                "w": [e.wallet for e in fresh],
                "e": [e.earning for e in fresh],
                "f": [e.fee for e in fresh],
                "rev": REVENUE,
                "cre": CREATOR,
                "fees": FEES,
            },
        )
        self.conn.commit()

    def check(self, expected: int) -> None:
        with self.conn.cursor() as cur:
            count = cur.execute("SELECT count(*) FROM usage").fetchone()[0]  # type: ignore[index]
            total, lowest = cur.execute(  # type: ignore[misc]
                "SELECT sum(balance), min(balance) FROM accounts"
            ).fetchone()
        if not self.conn.autocommit:
            self.conn.commit()
        if count != expected or total != self.total or lowest < 0:
            raise RuntimeError(
                f"lean PostgreSQL run broken: {count} rows (expected {expected}),"
                f" Σ balance {total} (expected {self.total}), lowest {lowest}"
            )

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            self.admin.execute(f'DROP SCHEMA "{self.schema}" CASCADE')
            self.admin.close()
