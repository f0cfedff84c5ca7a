"""Prometheus metrics of a modelbank process (``prometheus-client``; served at ``/metrics``).

Counters and histograms live in the process-wide default registry, updated where the work
happens: HTTP requests by the API's middleware, charges and rejections by the charge pipeline
(counted when their transaction commits, never for a batch that rolled back), group-commit
batch sizes by :mod:`modelbank.metering.group`, rate-limit refusals by the limiter. Gauges of
the database (holds open, outbox lag, connection pool) are read when scraped, per app
(:class:`DatabaseCollector`). With ``PROMETHEUS_MULTIPROC_DIR`` set (``modelbank serve
--workers N`` sets it), the workers' counters are summed (prometheus-client's multiprocess
mode).

Names follow Prometheus' conventions: ``_total`` for counters, base units (seconds).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, and_, event, exists, func, select, text
from sqlalchemy.orm import Session

from modelbank.db import partitions

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
"""Request latency buckets (seconds): a usage request takes ~1 ms on SQLite, a gateway
stream tens of seconds."""

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)
"""Group-commit batch sizes (events per transaction; at most 1,000)."""

HTTP_REQUESTS = Counter(
    "modelbank_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "modelbank_http_request_duration_seconds",
    "Time from the request's arrival to the end of its answer, by method and route template",
    ["method", "route"],
    buckets=LATENCY_BUCKETS_S,
)
CHARGES = Counter(
    "modelbank_charges",
    "Usage events answered by the charge pipeline and committed: charged or replayed",
    ["outcome"],
)
REJECTIONS = Counter(
    "modelbank_charge_rejections",
    "Usage events the charge pipeline refused, by error code (insufficient_funds…)",
    ["code"],
)
GROUP_COMMIT_BATCH = Histogram(
    "modelbank_group_commit_batch_size",
    "Events per group-commit transaction",
    buckets=BATCH_BUCKETS,
)
RATE_LIMITED = Counter(
    "modelbank_rate_limited",
    "Requests refused with 429, by what was exceeded (key_requests, user_tokens…)",
    ["limit"],
)

_PENDING = "modelbank.metrics.pending"
"""Session.info key: outcome counts waiting for the transaction's commit."""


def count_on_commit(session: Session, outcomes: Iterable[str]) -> None:
    """Count charge ``outcomes`` (``charged``/``replayed``; ``rejected`` ones are skipped:
    they are counted at once, by code) when ``session``'s transaction commits; dropped on
    rollback."""
    pending: dict[str, int] = session.info.setdefault(_PENDING, {})
    for outcome in outcomes:
        if outcome != "rejected":
            pending[outcome] = pending.get(outcome, 0) + 1


def flush_on_commit(session: Session) -> None:
    """After COMMIT (a SQLAlchemy ``after_commit`` listener): add the pending counts."""
    pending = session.info.pop(_PENDING, None)
    if pending:
        for outcome, n in pending.items():
            CHARGES.labels(outcome).inc(n)


def drop_on_rollback(session: Session) -> None:
    """After ROLLBACK: the counts of the rolled-back work are dropped."""
    session.info.pop(_PENDING, None)


class DatabaseCollector(Collector):
    """Gauges read from one app's database when scraped: holds open and their amount,
    outbox deliveries waiting and the age of the oldest (lag), connections of the pool.
    The reads are two small queries, cached ``ttl_s`` seconds so that several scrapers do
    not multiply them."""

    def __init__(self, engine: Engine, ttl_s: float = 5.0) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self._cached: tuple[float, list[GaugeMetricFamily]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._pool()
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > self.ttl_s:
            try:
                self._cached = (now, self._read())
            except Exception:  # a scrape must answer even while the database is down
                self._cached = (now, [])
        yield from self._cached[1]

    def _pool(self) -> Iterator[GaugeMetricFamily]:
        pool: Any = self.engine.pool
        if not hasattr(pool, "checkedout"):
            return
        used = GaugeMetricFamily(
            "modelbank_db_pool_connections",
            "Database connections of this process",
            labels=["state"],
        )
        used.add_metric(["checked_out"], pool.checkedout())
        used.add_metric(["idle"], pool.checkedin())
        used.add_metric(["overflow"], max(pool.overflow(), 0))
        yield used
        size = GaugeMetricFamily("modelbank_db_pool_size", "Configured size of the pool")
        size.add_metric([], pool.size())
        yield size

    def _read(self) -> list[GaugeMetricFamily]:
        from modelbank.ledger.codes import TransferFlags
        from modelbank.ledger.models import transfers_table as t
        from modelbank.webhooks.models import DeliveryStatus, WebhookDelivery

        resolved = t.alias("resolved")
        open_holds = select(func.count(), func.coalesce(func.sum(t.c.amount), 0)).where(
            t.c.flags.op("&")(int(TransferFlags.PENDING)) != 0,
            ~exists().where(resolved.c.pending_id == t.c.id),
        )
        d = WebhookDelivery.__table__
        outbox = select(func.count(), func.min(d.c.created_at)).where(
            and_(d.c.status == DeliveryStatus.PENDING.value)
        )
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))  # fails fast while the database is down
            holds, held = conn.execute(open_holds).one()
            waiting, oldest = conn.execute(outbox).one()
            ahead = partitions.months_ahead(conn)
        from modelbank.db.base import utcnow

        lag = 0.0
        if oldest is not None:
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=utcnow().tzinfo)
            lag = max((utcnow() - oldest).total_seconds(), 0.0)
        families = []
        for name, doc, value in (
            ("modelbank_holds_open", "Holds placed and not yet captured, voided or expired", holds),
            ("modelbank_holds_open_ucr", "Micro-credits reserved by the open holds", held),
            ("modelbank_outbox_pending", "Webhook deliveries waiting to be sent", waiting),
            ("modelbank_outbox_lag_seconds", "Age of the oldest waiting webhook delivery", lag),
        ):
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], float(value))
            families.append(family)
        if ahead is not None:  # PostgreSQL after migration 0016
            family = GaugeMetricFamily(
                "modelbank_partition_months_ahead",
                "Months past the current one with a partition ready (usage, transfers, route"
                " logs; the least of the three): 0 means next month's rows will fall into the"
                " default partition unless `modelbank jobs run` makes it",
            )
            family.add_metric([], float(ahead))
            families.append(family)
        return families


event.listen(Session, "after_commit", flush_on_commit)
event.listen(Session, "after_rollback", drop_on_rollback)


def render(app_registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text exposition of this process (or of every worker, in multiprocess mode) plus
    ``app_registry`` (the app's database gauges): (body, content type)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        process = generate_latest(merged)
    else:
        process = generate_latest(REGISTRY)
    return process + generate_latest(app_registry), CONTENT_TYPE_LATEST


__all__ = [
    "CHARGES",
    "GROUP_COMMIT_BATCH",
    "HTTP_LATENCY",
    "HTTP_REQUESTS",
    "RATE_LIMITED",
    "REJECTIONS",
    "DatabaseCollector",
    "count_on_commit",
    "drop_on_rollback",
    "flush_on_commit",
    "render",
]
