"""Background jobs (DESIGN §13 ``jobs.py``): expire holds, sweep expired grants, collect owed
earnings, expire marketplace listings and allocations (returning their escrow), run
after-commit tasks (auto top-up purchases, email notices; :mod:`modelbank.tasks`), deliver the
webhook outbox, seal the hash chains (:mod:`modelbank.chain`).

Each step is idempotent and works in bounded batches, each batch its own short transaction,
so a run can be interrupted at any point and run again (by ``modelbank jobs run``, by cron,
or in-process by ``modelbank serve`` with ``MODELBANK_JOBS_INTERVAL_S``). Several runners
may work at once: holds and grants are resolved under the ledger's row locks, and webhook
deliveries are claimed with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx
import stripe
from sqlalchemy.orm import Session, sessionmaker

from modelbank import chain
from modelbank.config import Settings
from modelbank.db import partitions
from modelbank.db.base import utcnow
from modelbank.marketplace import service as market
from modelbank.notices import sender
from modelbank.notices.service import EMAIL_TASK
from modelbank.pool import debts as pool_debts
from modelbank.secrets import SecretBox
from modelbank.tasks import service as tasks
from modelbank.wallets import (
    autotopup,
    autotopup_run,
    grants,
    holds,
    refunds,
    subscription_periods,
)
from modelbank.webhooks import delivery

BATCH = 500
"""Rows per transaction for holds, grants and debts."""
MAX_BATCHES = 1_000
"""Upper bound on batches per step in one run (a run always ends)."""
DELIVERY_BATCH = 100
"""Webhook deliveries sent per round."""
TASK_BATCH = 50
"""Tasks run per round: each may call a payment provider or a mail server (seconds each)."""


@dataclass
class JobReport:
    """What one run did: holds voided because they expired, expired grants swept, µcr of
    owed earnings collected, webhook messages delivered and attempts that failed."""

    holds_expired: int = 0
    grants_swept: int = 0
    debts_collected_ucr: int = 0
    pool_debts_collected_ucr: int = 0
    """µcr of clawback debts collected from depositors' wallets (DESIGN §9)."""
    marketplace_expired: int = 0
    """Marketplace rows ended by time: listings and allocations past their expiry (the
    allocations' unconsumed escrow returned to the buyers) and allocation holds of gateway
    calls never settled (DESIGN §10)."""
    webhooks_delivered: int = 0
    webhook_attempts_failed: int = 0
    webhooks_given_up: int = 0
    tasks_done: int = 0
    """After-commit tasks run to completion (auto top-ups started, emails sent)."""
    task_attempts_failed: int = 0
    subscriptions_renewed: int = 0
    """Manual subscriptions renewed or ended at their period's end (when turned on)."""
    partitions_made: int = 0
    """PostgreSQL: monthly partitions made (the current month and two ahead are kept)."""
    transfers_sealed: int = 0
    """Transfers linked into the hash chain (issue 16)."""
    audit_records_sealed: int = 0


def _until_done(
    factory: sessionmaker[Session], step: Callable[[Session], int], *, count_rows: bool = True
) -> int:
    total = 0
    for _ in range(MAX_BATCHES):
        with factory() as session, session.begin():
            done = step(session)
        total += done
        if done == 0 or not count_rows:
            break
    return total


def run_once(
    factory: sessionmaker[Session],
    *,
    box: SecretBox,
    client: httpx.Client | None = None,
    now: datetime | None = None,
    deliver: bool = True,
    on_step: Callable[[str], None] | None = None,
    settings: Settings | None = None,
    payment_http_client: stripe.HTTPClient | None = None,
    renew_manual_subscriptions: bool = False,
) -> JobReport:
    """Run every job once, to completion (bounded). ``now`` fixes the clock (tests);
    ``client`` sends webhooks (a fresh one with a 10 s timeout when None); ``deliver`` False
    skips the outbox and the tasks; ``renew_manual_subscriptions`` renews ``manual``
    subscriptions whose period ended (``MODELBANK_MANUAL_SUBSCRIPTIONS_AUTO_RENEW``).
    ``on_step`` is told each step's name as it starts (progress display). ``settings``
    choose the auto top-up's payment provider and the SMTP server (default: from the
    environment); ``payment_http_client`` is the Stripe SDK's HTTP client (tests).
    Raises :class:`~modelbank.secrets.SecretUndecryptable` when webhook secrets cannot be
    decrypted with the configured key (the other steps have run by then)."""
    report = JobReport()

    def step(name: str) -> None:
        if on_step is not None:
            on_step(name)

    at = now or utcnow()
    if renew_manual_subscriptions:
        # Before the sweep, so a renewed period's rollover happens in the same run.
        step("renew manual subscriptions")
        report.subscriptions_renewed = _until_done(
            factory, lambda s: subscription_periods.renew_manual_due(s, now=at, limit=BATCH)
        )
    step("expire holds")
    report.holds_expired = _until_done(factory, lambda s: holds.expire_due(s, now=at, limit=BATCH))
    step("sweep expired grants")
    report.grants_swept = _sweep_grants(factory, at)
    step("collect owed earnings")
    report.debts_collected_ucr = _until_done(
        factory, lambda s: refunds.settle_debts(s, now=at, limit=BATCH), count_rows=False
    )
    step("collect pool debts")
    report.pool_debts_collected_ucr = _until_done(
        factory, lambda s: pool_debts.settle_debts(s, now=at, limit=BATCH), count_rows=False
    )
    step("expire marketplace listings and allocations")
    report.marketplace_expired = _until_done(
        factory, lambda s: market.expire_due(s, now=at, limit=BATCH)
    )
    step("keep monthly partitions ahead")
    with factory() as session, session.begin():
        report.partitions_made = len(partitions.ensure_ahead(session.connection(), now=at))
    step("seal hash chains")
    sealed = chain.seal_all(factory, now=now)
    report.transfers_sealed = sealed[chain.TRANSFERS.name]
    report.audit_records_sealed = sealed[chain.AUDIT.name]
    if deliver:
        step("run tasks")
        report.tasks_done, report.task_attempts_failed = run_tasks(
            factory, settings or Settings(), now=now, payment_http_client=payment_http_client
        )
        step("deliver webhooks")
        _deliver_webhooks(factory, client, box, now, report)
    return report


def _sweep_grants(factory: sessionmaker[Session], at: datetime) -> int:
    """Expire the grants due at ``at``, a page of users per transaction; how many swept."""
    swept_total = 0
    cursor: int | None = 0
    for _ in range(MAX_BATCHES):
        with factory() as session, session.begin():
            swept, cursor = grants.sweep_expired_page(
                session, now=at, limit=BATCH, after_user=cursor or 0
            )
        swept_total += swept
        if cursor is None:
            break
    return swept_total


def _deliver_webhooks(
    factory: sessionmaker[Session],
    client: httpx.Client | None,
    box: SecretBox,
    now: datetime | None,
    report: JobReport,
) -> None:
    """Send the outbox's due deliveries in batches (a fresh client with a 10 s timeout when
    ``client`` is None), counting them into ``report``."""
    own = client is None
    http = client or httpx.Client(timeout=10.0)
    try:
        for _ in range(MAX_BATCHES):
            result = delivery.deliver_due(factory, http, box, now=now, limit=DELIVERY_BATCH)
            report.webhooks_delivered += result.delivered
            report.webhook_attempts_failed += result.failed_attempts
            report.webhooks_given_up += result.given_up
            if result.delivered + result.failed_attempts < DELIVERY_BATCH:
                break
    finally:
        if own:
            http.close()


def run_tasks(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    now: datetime | None = None,
    payment_http_client: stripe.HTTPClient | None = None,
) -> tuple[int, int]:
    """Run the due after-commit tasks (auto top-ups, then emails: a top-up's notice is
    queued by the top-up). Returns (done, failed attempts)."""
    handlers = {
        autotopup.TASK: autotopup_run.handler(
            factory, settings, http_client=payment_http_client, now=now
        ),
        EMAIL_TASK: sender.handler(settings),
    }
    done = failed = 0
    for _ in range(MAX_BATCHES):
        result = tasks.run_due(factory, handlers, now=now, limit=TASK_BATCH)
        done += result.done
        failed += result.failed_attempts
        if result.done + result.failed_attempts < TASK_BATCH:
            break
    return done, failed


log = logging.getLogger(__name__)


class JobRunner:
    """:func:`run_once` every ``interval_s`` seconds on a daemon thread, for ``modelbank serve``
    with ``MODELBANK_JOBS_INTERVAL_S`` > 0. A failing run is logged and retried next time.
    :meth:`close` stops it (waiting for a run in progress)."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        box: SecretBox,
        interval_s: float,
        settings: Settings | None = None,
    ) -> None:
        self._factory = factory
        self._box = box
        self._settings = settings
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=10.0)
        self._thread = threading.Thread(target=self._loop, name="modelbank-jobs", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                run_once(self._factory, box=self._box, client=self._client, settings=self._settings)
            except Exception:  # a bad run must not kill the server's job thread
                log.exception("background jobs failed; retrying in %s s", self._interval_s)

    def close(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._client.close()
