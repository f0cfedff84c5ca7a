"""Where the window counters live. Every store answers :meth:`Store.hit`: add ``cost`` to
each bucket's current window and return the new totals, in one step (one lock, one
statement or one Redis round trip).

* :class:`MemoryStore`: this process only — exact for one server process (SQLite has one);
* :class:`DatabaseStore`: the ``rate_limit_counters`` table, shared by every process on one
  database (PostgreSQL: one ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` per hit);
* :class:`RedisStore`: ``INCRBY`` + ``EXPIRE`` in one pipeline (``MODELBANK_REDIS_URL``).

Fixed windows: a caller may send up to twice a limit across a window boundary; the
simplicity (one counter per bucket and window, no clocks to agree on but Unix time) is the
trade.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from modelbank.ratelimits.models import rate_limit_counters_table as c

KEEP_WINDOWS_S = 120
"""Counters older than this many seconds are dropped (the longest window is a minute)."""


def window_length(bucket: str) -> int:
    """Seconds per window of a bucket: ``…:r`` (requests) 1, ``…:t`` (tokens) 60."""
    return 60 if bucket.endswith(":t") else 1


@dataclass(frozen=True, slots=True)
class Hit:
    """Add ``cost`` to ``bucket`` in window ``window`` (Unix time // window length)."""

    bucket: str
    window: int
    cost: int
    ttl_s: int


class Store(Protocol):
    blocking: bool
    """Whether :meth:`hit` does I/O (the HTTP layer then calls it off the event loop)."""

    def hit(self, hits: Sequence[Hit]) -> list[int]: ...


class MemoryStore:
    """Counters in this process (dropped two minutes after their window)."""

    blocking = False

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._calls = 0

    def hit(self, hits: Sequence[Hit]) -> list[int]:
        with self._lock:
            out = []
            for h in hits:
                key = (h.bucket, h.window)
                total = self._counts.get(key, 0) + h.cost
                self._counts[key] = total
                out.append(total)
            self._calls += 1
            if self._calls % 10_000 == 0 or len(self._counts) > 100_000:
                now = int(time.time())
                self._counts = {
                    (bucket, window): n
                    for (bucket, window), n in self._counts.items()
                    if window >= (now - KEEP_WINDOWS_S) // window_length(bucket)
                }
            return out


class DatabaseStore:
    """Counters in ``rate_limit_counters``, in their own short transaction per hit."""

    blocking = True

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory
        self._calls = 0

    def hit(self, hits: Sequence[Hit]) -> list[int]:
        with self._factory() as session, session.begin():
            dialect = session.get_bind().dialect.name
            insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
            out = []
            for h in sorted(hits, key=lambda h: h.bucket):  # one lock order: no deadlocks
                stmt = insert(c).values(bucket=h.bucket, window=h.window, hits=h.cost)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[c.c.bucket, c.c.window], set_={"hits": c.c.hits + h.cost}
                ).returning(c.c.hits)
                out.append((h, int(session.execute(stmt).scalar_one())))
            self._calls += 1
            if self._calls % 1_000 == 0:
                old = int(time.time()) - KEEP_WINDOWS_S
                for suffix, length in (("r", 1), ("t", 60)):
                    session.execute(
                        delete(c).where(c.c.bucket.like(f"%:{suffix}"), c.c.window < old // length)
                    )
        by_hit = dict(out)
        return [by_hit[h] for h in hits]


class RedisStore:
    """Counters in Redis: ``<prefix><bucket>:<window>``, expiring after their window."""

    blocking = True

    def __init__(self, url: str, prefix: str = "modelbank:rl:") -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix

    def hit(self, hits: Sequence[Hit]) -> list[int]:
        pipe = self._redis.pipeline(transaction=False)
        for h in hits:
            key = f"{self._prefix}{h.bucket}:{h.window}"
            pipe.incrby(key, h.cost)
            pipe.expire(key, h.ttl_s)
        replies = pipe.execute()
        return [int(replies[2 * i]) for i in range(len(hits))]
