"""Test fixtures: a migrated database per test on SQLite, and on PostgreSQL when reachable.

Every test that uses ``db`` runs on both backends (``[sqlite]`` / ``[postgres]``). The
PostgreSQL variant is skipped, with the reason, when ``MODELBANK_TEST_POSTGRES_URL``
(default ``postgresql://postgres@127.0.0.1:5432/test``) cannot be reached. After each test
the ledger invariants (DESIGN §3) must hold: the fixture checks them.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session, sessionmaker

from modelbank import chain
from modelbank.data import PACKAGED_DATA_DIR, require
from modelbank.db import partitions
from modelbank.db.engine import make_engine, session_factory
from modelbank.db.migrate import upgrade
from modelbank.db.models import metadata
from modelbank.ledger import invariants
from modelbank.ledger import service as ledger
from modelbank.marketplace import invariants as market_invariants
from modelbank.pool import invariants as pool_invariants
from modelbank.wallets import grants, packages

# The tests' fake upstreams listen on loopback: users may deposit keys pointing there. The
# guard itself is tested with the setting off (tests/pool/test_deposits.py).
os.environ.setdefault("MODELBANK_POOL_PRIVATE_UPSTREAMS", "true")

POSTGRES_URL = os.environ.get(
    "MODELBANK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


class Db:
    """A migrated database for one test: ``engine``, ``factory``, ``tx()`` and its ``url``
    (with the test schema in it on PostgreSQL, for the CLI)."""

    def __init__(self, engine: Engine, backend: str, url: str) -> None:
        self.engine = engine
        self.backend = backend
        self.url = url
        self.factory: sessionmaker[Session] = session_factory(engine)
        self.check_grants = True
        """Whether :meth:`violations` includes the wallets' grant invariant (off for tests of
        the ledger alone, which move credits below the wallets layer)."""

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """A session in a transaction, committed on success."""
        with self.factory() as session, session.begin():
            yield session

    def violations(self) -> list[object]:
        """Ledger invariants (DESIGN §3), the wallets' (grants sum to balances) and the
        pool's (deposit credit = consumed share + clawed back + outstanding, DESIGN §9)."""
        with self.tx() as session:
            found: list[object] = [*invariants.check(session)]
            if self.check_grants:
                found.extend(grants.check(session))
            found.extend(pool_invariants.check(session))
            found.extend(market_invariants.check(session))
            found.extend(partitions.dangling_references(session.connection()))
        return found + chain.check(self.factory)  # issue 16: every link sealed, recomputed


def _postgres_reason() -> str | None:
    try:
        engine = make_engine(POSTGRES_URL, connect_args={"connect_timeout": 2})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure to connect means: skip, with the reason
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {type(exc).__name__}"
    return None


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_schema() -> Iterator[str]:
    reason = _postgres_reason()
    if reason:
        pytest.skip(reason)
    schema = f"mb_test_{uuid.uuid4().hex[:10]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"})
    upgrade(engine)
    engine.dispose()
    yield schema
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


_EMPTYING: dict[str, str] = {}


def _emptying_sql(conn: Connection) -> str:
    """The statements that empty the test schema between tests: a ``DELETE`` per table,
    children first (the partitioned tables' months and key tables included), then every
    sequence restarted. Not ``TRUNCATE``: it creates new files for each of the ~80 relations
    (≈ 300–900 ms a test on the 2-core CI machine against ≈ 10 ms for these DELETEs on the
    few rows a test leaves). ``reference_epoch`` keeps its row; the DELETEs move it forward
    (by trigger), so no process serves a cached catalog row of the test before."""
    schema = str(conn.execute(text("SELECT current_schema()")).scalar_one())
    found = _EMPTYING.get(schema)
    if found is None:
        names = [t.name for t in reversed(metadata.sorted_tables) if t.name != "reference_epoch"]
        names += partitions.SIDE_TABLES  # the partitioned tables' unique keys (0016)
        sequences = conn.execute(
            text("SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()")
        ).scalars()
        found = _EMPTYING[schema] = "; ".join(
            [f'DELETE FROM "{name}"' for name in names]
            + [f'ALTER SEQUENCE "{name}" RESTART' for name in sequences]
        )
    return found


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """A fresh, migrated database; the ledger invariants are checked when the test ends."""
    if request.param == "sqlite":
        path = tmp_path / "test.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
        engine = make_engine(url)
    else:
        schema = request.getfixturevalue("postgres_schema")
        url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
        engine = make_engine(
            POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"}, pool_size=10
        )
        with engine.begin() as conn:
            conn.exec_driver_sql(_emptying_sql(conn))
        with Session(engine) as session, session.begin():
            ledger.ensure_platform_accounts(session)
            packages.seed_defaults(session)  # seeded by the migration, emptied above
    database = Db(engine, request.param, url)
    database.check_grants = request.node.get_closest_marker("below_wallets") is None
    yield database
    broken = database.violations()
    engine.dispose()
    assert broken == [], f"ledger invariants broken: {broken}"


def data_file(name: str) -> Path:
    """A real data file shipped with the package (``modelbank.data``, gzipped); never absent,
    so a test using it never skips."""
    return require(PACKAGED_DATA_DIR, name)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say loudly, at the end of the run, which parts of the suite did not run because a tool
    is missing here: the dashboard's browser tests without Chromium (or Playwright), the
    PostgreSQL runs without a reachable server."""
    skipped: list[pytest.TestReport] = terminalreporter.stats.get("skipped", [])
    missing = {
        "Chromium / Playwright: the dashboard's browser tests (tests/web/test_browser.py)": [
            r for r in skipped if any(w in _skip_reason(r) for w in ("Chromium", "playwright"))
        ],
        "PostgreSQL: every database test's [postgres] run": [
            r for r in skipped if "PostgreSQL not reachable" in _skip_reason(r)
        ],
    }
    for what, reports in missing.items():
        if not reports:
            continue
        terminalreporter.write_sep("!", f"NOT TESTED here: {what}", yellow=True, bold=True)
        terminalreporter.write_line(
            f"{len(reports)} tests skipped: {_skip_reason(reports[0])}", yellow=True
        )
