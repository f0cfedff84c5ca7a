"""SQLite writers of one process queue on a lock instead of polling the file lock
(modelbank.db.engine.session_factory)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from modelbank.db.engine import make_engine, session_factory


def test_writers_queue_and_a_failed_transaction_releases_the_queue(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'q.db'}")
    factory = session_factory(engine)
    with factory() as s, s.begin():
        s.execute(text("CREATE TABLE t (n INTEGER)"))
    entered = threading.Event()
    order: list[str] = []

    def slow_writer() -> None:
        with factory() as s, s.begin():
            s.execute(text("INSERT INTO t VALUES (1)"))
            entered.set()
            time.sleep(0.3)
            order.append("first")

    thread = threading.Thread(target=slow_writer)
    thread.start()
    entered.wait(5)
    started = time.monotonic()
    with factory() as s, s.begin():  # waits in the queue, then writes: no "database is locked"
        s.execute(text("INSERT INTO t VALUES (2)"))
        order.append("second")
    waited = time.monotonic() - started
    thread.join()
    assert order == ["first", "second"] and 0.1 < waited < 3

    with pytest.raises(RuntimeError), factory() as s, s.begin():
        s.execute(text("INSERT INTO t VALUES (3)"))
        raise RuntimeError("rolled back")
    started = time.monotonic()
    with factory() as s, s.begin():  # the rolled-back writer left the queue
        s.execute(text("INSERT INTO t VALUES (4)"))
    assert time.monotonic() - started < 5  # a writer left queued would block for good
    with factory() as s:
        assert sorted(s.execute(text("SELECT n FROM t")).scalars()) == [1, 2, 4]
    engine.dispose()
