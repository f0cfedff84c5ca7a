"""Delivery: signed POSTs to a real local receiver, retries with backoff, giving up, the
attempt log, at-least-once without double sends (SKIP LOCKED on PostgreSQL)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, text

from modelbank.secrets import SecretBox, SecretUndecryptable
from modelbank.webhooks import service as webhooks
from modelbank.webhooks.delivery import MAX_ATTEMPTS, MAX_BATCH, backoff_s, deliver_due
from modelbank.webhooks.models import DeliveryStatus, webhook_deliveries_table
from tests.conftest import Db
from tests.webhooks.conftest import Receiver

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _setup(db: Db, box: SecretBox, url: str, events: list[str] | None = None) -> tuple[int, str]:
    with db.tx() as session:
        info, secret = webhooks.create_endpoint(session, box, url=url, events=events or ["*"])
    return info.id, secret


def _emit(
    db: Db, event_type: str = "purchase.completed", *, now: datetime = T0, **data: int
) -> int:
    with db.tx() as session:
        return webhooks.emit(session, event_type, dict(data), now=now)


def _deliveries(db: Db, endpoint_id: int | None = None) -> list[webhooks.DeliveryInfo]:
    with db.tx() as session:
        return webhooks.list_deliveries(session, endpoint_id=endpoint_id)


def test_backoff_doubles_from_30_s_and_is_capped() -> None:
    assert [backoff_s(n) for n in range(1, 8)] == [30, 60, 120, 240, 480, 960, 1920]
    assert backoff_s(30) == 6 * 3600


def test_delivers_signed_message_to_a_real_receiver(
    db: Db, box: SecretBox, receiver: Receiver, client: httpx.Client
) -> None:
    endpoint, secret = _setup(db, box, receiver.url)
    receiver.secret = secret
    event = _emit(db, purchase_id=42, amount_ucr=50_000_000)

    report = deliver_due(db.factory, client, box, now=T0)

    assert report == webhooks.DeliveryReport(delivered=1, failed_attempts=0, given_up=0)
    (got,) = receiver.received
    assert got.verified, "the receiver could not verify the Standard Webhooks signature"
    assert got.payload == {
        "type": "purchase.completed",
        "timestamp": "2026-01-01T12:00:00.000000Z",
        "data": {"purchase_id": 42, "amount_ucr": 50_000_000},
    }
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-signature"].startswith("v1,")
    (delivery,) = _deliveries(db, endpoint)
    assert delivery.event_id == event and delivery.message_id == got.headers["webhook-id"]
    assert delivery.status is DeliveryStatus.DELIVERED and delivery.delivered_at == T0
    assert delivery.attempts == 1 and delivery.last_status_code == 200
    assert delivery.next_attempt_at is None
    with db.tx() as session:
        (attempt,) = webhooks.list_attempts(session, delivery.id)
    assert attempt.status_code == 200 and attempt.error is None and attempt.attempted_at == T0
    assert attempt.duration_ms >= 1

    # idempotent: later runs never send a delivered message again
    later = deliver_due(db.factory, client, box, now=T0 + timedelta(days=30))
    assert later == webhooks.DeliveryReport() and len(receiver.received) == 1


def test_a_wrong_secret_does_not_verify(
    db: Db, box: SecretBox, receiver: Receiver, client: httpx.Client
) -> None:
    _setup(db, box, receiver.url)
    receiver.secret = webhooks.new_secret()  # not the endpoint's
    _emit(db, purchase_id=1)
    deliver_due(db.factory, client, box, now=T0)
    assert [r.verified for r in receiver.received] == [False]


def test_retries_with_exponential_backoff_until_a_2xx(
    db: Db, box: SecretBox, receiver: Receiver, client: httpx.Client
) -> None:
    endpoint, secret = _setup(db, box, receiver.url)
    receiver.secret, receiver.statuses = secret, [500, 500, 204]
    _emit(db, payout_id=9)

    first = deliver_due(db.factory, client, box, now=T0)
    assert first == webhooks.DeliveryReport(failed_attempts=1)
    (d,) = _deliveries(db)
    assert d.status is DeliveryStatus.PENDING and d.attempts == 1 and d.last_status_code == 500
    assert d.next_attempt_at == T0 + timedelta(seconds=30)

    # not due yet: nothing is sent
    assert deliver_due(db.factory, client, box, now=T0 + timedelta(seconds=29)) == (
        webhooks.DeliveryReport()
    )
    assert len(receiver.received) == 1

    second_at = T0 + timedelta(seconds=30)
    assert deliver_due(db.factory, client, box, now=second_at).failed_attempts == 1
    (d,) = _deliveries(db)
    assert d.attempts == 2 and d.next_attempt_at == second_at + timedelta(seconds=60)

    third_at = second_at + timedelta(seconds=60)
    assert deliver_due(db.factory, client, box, now=third_at).delivered == 1
    (d,) = _deliveries(db, endpoint)
    assert d.status is DeliveryStatus.DELIVERED and d.attempts == 3 and d.last_status_code == 204

    assert [r.verified for r in receiver.received] == [True, True, True]
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1  # same message id
    assert len({r.body for r in receiver.received}) == 1  # same body on every retry
    with db.tx() as session:
        log = webhooks.list_attempts(session, d.id)
    assert [a.status_code for a in log] == [500, 500, 204]
    assert [a.attempted_at for a in log] == [T0, second_at, third_at]


def test_gives_up_after_max_attempts(db: Db, box: SecretBox) -> None:
    calls: list[httpx.Request] = []

    def always_503(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503)

    _setup(db, box, "https://receiver.example/hook")
    _emit(db, "payout.failed", payout_id=1)
    now = T0
    reports = []
    with httpx.Client(transport=httpx.MockTransport(always_503)) as client:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            reports.append(deliver_due(db.factory, client, box, now=now))
            now += timedelta(seconds=backoff_s(attempt))
        assert deliver_due(db.factory, client, box, now=now + timedelta(days=1)) == (
            webhooks.DeliveryReport()
        )
    assert len(calls) == MAX_ATTEMPTS
    assert [r.failed_attempts for r in reports] == [1] * MAX_ATTEMPTS
    assert [r.given_up for r in reports] == [0] * (MAX_ATTEMPTS - 1) + [1]
    (d,) = _deliveries(db)
    assert d.status is DeliveryStatus.FAILED and d.attempts == MAX_ATTEMPTS
    assert d.next_attempt_at is None and d.last_status_code == 503


def test_connection_errors_are_logged_and_retried(db: Db, box: SecretBox) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    _setup(db, box, "https://receiver.example/hook")
    _emit(db, "usage.refunded", usage_id=3)
    with httpx.Client(transport=httpx.MockTransport(refuse)) as client:
        report = deliver_due(db.factory, client, box, now=T0)
    assert report.failed_attempts == 1
    (d,) = _deliveries(db)
    assert d.status is DeliveryStatus.PENDING and d.last_status_code is None
    assert d.last_error is not None and "ConnectError" in d.last_error
    with db.tx() as session:
        (attempt,) = webhooks.list_attempts(session, d.id)
    assert attempt.status_code is None and attempt.error == d.last_error


def test_redirects_are_failures_not_followed(db: Db, box: SecretBox) -> None:
    seen: list[str] = []

    def redirect(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(307, headers={"location": "https://elsewhere.example/"})

    _setup(db, box, "https://receiver.example/hook")
    _emit(db, purchase_id=1)
    with httpx.Client(transport=httpx.MockTransport(redirect)) as client:
        assert deliver_due(db.factory, client, box, now=T0).failed_attempts == 1
    assert seen == ["https://receiver.example/hook"]


def test_a_disabled_endpoint_gets_nothing(
    db: Db, box: SecretBox, receiver: Receiver, client: httpx.Client
) -> None:
    endpoint, _ = _setup(db, box, receiver.url)
    _emit(db, purchase_id=1)
    with db.tx() as session:
        webhooks.disable_endpoint(session, endpoint)
    _emit(db, purchase_id=2)
    assert deliver_due(db.factory, client, box, now=T0 + timedelta(hours=1)) == (
        webhooks.DeliveryReport()
    )
    assert receiver.received == []
    assert [d.status for d in _deliveries(db)] == [DeliveryStatus.FAILED]


def test_a_changed_secret_key_sends_nothing_and_claims_nothing(
    db: Db, box: SecretBox, client: httpx.Client
) -> None:
    _setup(db, box, "http://127.0.0.1:9/never")
    _emit(db, purchase_id=1)
    with pytest.raises(SecretUndecryptable):
        deliver_due(db.factory, client, SecretBox(SecretBox.generate_key()), now=T0)
    (d,) = _deliveries(db)
    assert d.attempts == 0 and d.next_attempt_at == T0


def test_limit_bounds_a_run(db: Db, box: SecretBox) -> None:
    _setup(db, box, "https://receiver.example/hook")
    for i in range(5):
        _emit(db, purchase_id=i)
    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200))) as client:
        assert deliver_due(db.factory, client, box, now=T0, limit=3).delivered == 3
        assert deliver_due(db.factory, client, box, now=T0, limit=3).delivered == 2
        with pytest.raises(ValueError):
            deliver_due(db.factory, client, box, limit=MAX_BATCH + 1)


def test_concurrent_runners_send_each_message_once(db: Db, box: SecretBox) -> None:
    sent: Counter[str] = Counter()
    lock = threading.Lock()

    def count(request: httpx.Request) -> httpx.Response:
        with lock:
            sent[request.headers["webhook-id"]] += 1
        return httpx.Response(200)

    _setup(db, box, "https://a.example/hook")
    _setup(db, box, "https://b.example/hook")
    for i in range(30):
        _emit(db, purchase_id=i)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with httpx.Client(transport=httpx.MockTransport(count)) as client:
                while deliver_due(db.factory, client, box, now=T0, limit=7).delivered:
                    pass
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sum(sent.values()) == 60 and set(sent.values()) == {2}  # 30 messages × 2 endpoints
    assert {d.status for d in _deliveries(db)} == {DeliveryStatus.DELIVERED}


def test_postgres_skips_rows_locked_by_another_runner(db: Db, box: SecretBox) -> None:
    if db.backend != "postgres":
        pytest.skip("FOR UPDATE SKIP LOCKED is the PostgreSQL path (SQLite serialises writers)")
    _setup(db, box, "https://receiver.example/hook")
    _emit(db, purchase_id=1)
    _emit(db, purchase_id=2)
    with db.factory() as other, other.begin():
        locked = other.execute(
            select(webhook_deliveries_table.c.id)
            .order_by(webhook_deliveries_table.c.id)
            .limit(1)
            .with_for_update()
        ).scalar_one()
        other.execute(text("SELECT 1"))
        outcome: list[webhooks.DeliveryReport] = []
        with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200))) as client:
            runner = threading.Thread(
                target=lambda: outcome.append(deliver_due(db.factory, client, box, now=T0))
            )
            runner.start()
            runner.join(timeout=20)
            assert not runner.is_alive(), "deliver_due waited for a locked row"
            assert outcome == [webhooks.DeliveryReport(delivered=1)]
    statuses = {d.id: d.status for d in _deliveries(db)}
    assert statuses[locked] is DeliveryStatus.PENDING
    assert [s for i, s in statuses.items() if i != locked] == [DeliveryStatus.DELIVERED]
