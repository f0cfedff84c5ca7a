"""Endpoints, event patterns and the outbox: emit fans out in the caller's transaction."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text

from modelbank.errors import InvalidInput
from modelbank.secrets import SecretBox
from modelbank.webhooks import service as webhooks
from modelbank.webhooks.errors import WebhookDeliveryNotFound, WebhookEndpointNotFound
from modelbank.webhooks.events import EVENT_TYPES, check_patterns, matches, subscribed
from modelbank.webhooks.models import DeliveryStatus, outbox_events_table, webhook_deliveries_table
from tests.conftest import Db

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("*", "wallet.low_balance", True),
        ("payout.*", "payout.completed", True),
        ("payout.*", "purchase.completed", False),
        ("purchase.*", "purchase.refunded", True),
        ("usage.refunded", "usage.refunded", True),
        ("usage.refunded", "purchase.refunded", False),
        ("pay*", "payout.failed", False),
    ],
)
def test_pattern_matching(pattern: str, event_type: str, expected: bool) -> None:
    assert matches(pattern, event_type) is expected


def test_every_known_type_has_a_family_wildcard() -> None:
    for event_type in EVENT_TYPES:
        family = event_type.split(".")[0]
        assert check_patterns([f"{family}.*"]) == [f"{family}.*"]
        assert subscribed([f"{family}.*"], event_type)


@pytest.mark.parametrize(
    "events",
    [[], ["wallet.*", "nope"], ["payout.exploded"], ["payouts.*"], ["*.*"], ["payout."], ["**"]],
)
def test_bad_patterns_are_refused(events: list[str]) -> None:
    with pytest.raises(InvalidInput):
        check_patterns(events)


def test_patterns_are_deduplicated_in_order() -> None:
    assert check_patterns(["payout.*", "*", "payout.*"]) == ["payout.*", "*"]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "example.com/hook",
        "https://user:pw@example.com/hook",
        "https://user@example.com/hook",
        "https:///nohost",
        "https://example.com:99999/hook",
        "https://exa mple.com/hook",
        "https://example.com/\nhook",
        "https://example.com/" + "a" * 2000,
        "javascript:alert(1)",
    ],
)
def test_bad_urls_are_refused(db: Db, box: SecretBox, url: str) -> None:
    with db.tx() as session, pytest.raises(InvalidInput, match="url"):
        webhooks.create_endpoint(session, box, url=url, events=["*"])


def test_create_returns_a_standard_webhooks_secret_stored_encrypted(db: Db, box: SecretBox) -> None:
    with db.tx() as session:
        info, secret = webhooks.create_endpoint(
            session, box, url="https://example.com/hook", events=["payout.*"], description="ops"
        )
    assert secret.startswith("whsec_") and len(secret) == len("whsec_") + 32
    assert info.events == ("payout.*",) and info.is_active and info.description == "ops"
    with db.tx() as session:
        row = session.execute(text("SELECT * FROM webhook_endpoints")).mappings().one()
    stored = " ".join(str(v) for v in row.values())
    assert secret not in stored and secret.removeprefix("whsec_") not in stored
    assert box.decrypt(row["secret_encrypted"]) == secret
    with db.tx() as session:  # a second endpoint gets another secret
        _, other = webhooks.create_endpoint(session, box, url="https://example.com/b", events=["*"])
    assert other != secret


def _endpoint(db: Db, box: SecretBox, events: list[str], url: str = "https://e.example/h") -> int:
    with db.tx() as session:
        return webhooks.create_endpoint(session, box, url=url, events=events)[0].id


def _count(db: Db, table: str) -> int:
    with db.tx() as session:
        return int(session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_emit_fans_out_to_active_subscribed_endpoints(db: Db, box: SecretBox) -> None:
    wallet = _endpoint(db, box, ["wallet.low_balance"])
    everything = _endpoint(db, box, ["*"])
    payouts = _endpoint(db, box, ["payout.*"])
    disabled = _endpoint(db, box, ["*"])
    with db.tx() as session:
        webhooks.disable_endpoint(session, disabled)
        event_id = webhooks.emit(session, "wallet.low_balance", {"user_id": 7}, now=T0)
        payout_id = webhooks.emit(session, "payout.completed", {"payout_id": 1}, now=T0)
        hold_id = webhooks.emit(session, "hold.expired", {"hold_id": 3}, now=T0)
    with db.tx() as session:
        found = session.execute(
            select(webhook_deliveries_table.c.event_id, webhook_deliveries_table.c.endpoint_id)
        ).all()
        pending = webhooks.list_deliveries(session, status=DeliveryStatus.PENDING)
    assert sorted(found) == sorted(
        [
            (event_id, wallet),
            (event_id, everything),
            (payout_id, everything),
            (payout_id, payouts),
            (hold_id, everything),
        ]
    )
    assert disabled not in {e for _, e in found}
    assert len(pending) == 5 and all(d.next_attempt_at == T0 and d.attempts == 0 for d in pending)
    assert [d.id for d in pending] == sorted((d.id for d in pending), reverse=True)


def test_emit_without_subscribers_still_records_the_event(db: Db) -> None:
    with db.tx() as session:
        webhooks.emit(session, "purchase.completed", {"purchase_id": 1})
    assert _count(db, "outbox_events") == 1
    assert _count(db, "webhook_deliveries") == 0


def test_emit_rolls_back_with_the_callers_transaction(db: Db, box: SecretBox) -> None:
    _endpoint(db, box, ["*"])
    with pytest.raises(RuntimeError), db.tx() as session:
        webhooks.emit(session, "usage.refunded", {"usage_id": 1})
        raise RuntimeError("the change failed")
    assert _count(db, "outbox_events") == 0
    assert _count(db, "webhook_deliveries") == 0


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [
        ("wallet.unknown", {}),
        ("wallet.low_balance", {"amount": 1.5}),
        ("wallet.low_balance", {"nested": [{"x": 0.1}]}),
        ("wallet.low_balance", {"when": datetime(2026, 1, 1, tzinfo=UTC)}),
        ("wallet.low_balance", {"big": "x" * 70_000}),
    ],
)
def test_emit_refuses_unknown_types_and_non_integer_payloads(
    db: Db, event_type: str, payload: dict[str, object]
) -> None:
    with db.tx() as session, pytest.raises(InvalidInput):
        webhooks.emit(session, event_type, payload)


def test_message_ids_are_unique_and_bodies_stable(db: Db) -> None:
    with db.tx() as session:
        for i in range(20):
            webhooks.emit(session, "purchase.completed", {"purchase_id": i}, now=T0)
        rows = session.execute(select(outbox_events_table)).mappings().all()
    assert len({r["message_id"] for r in rows}) == 20
    assert all(r["message_id"].startswith("msg_") for r in rows)
    body = webhooks.message_body("purchase.completed", T0, {"purchase_id": 1, "amount_ucr": 5})
    assert body == (
        b'{"type":"purchase.completed","timestamp":"2026-01-01T12:00:00.000000Z",'
        b'"data":{"purchase_id":1,"amount_ucr":5}}'
    )


def test_disable_is_idempotent_and_fails_pending_deliveries(db: Db, box: SecretBox) -> None:
    endpoint = _endpoint(db, box, ["*"])
    with db.tx() as session:
        webhooks.emit(session, "hold.expired", {"hold_id": 1}, now=T0)
        first = webhooks.disable_endpoint(session, endpoint, now=T0)
    with db.tx() as session:
        again = webhooks.disable_endpoint(session, endpoint)
        (delivery,) = webhooks.list_deliveries(session, endpoint_id=endpoint)
        webhooks.emit(session, "hold.expired", {"hold_id": 2})
    assert not first.is_active and first.disabled_at == T0 == again.disabled_at
    assert delivery.status is DeliveryStatus.FAILED
    assert delivery.last_error == "endpoint disabled" and delivery.next_attempt_at is None
    assert _count(db, "webhook_deliveries") == 1  # nothing new for a disabled endpoint


def test_listing_and_not_found(db: Db, box: SecretBox) -> None:
    ids = [_endpoint(db, box, ["*"], url=f"https://e.example/{i}") for i in range(5)]
    with db.tx() as session:
        webhooks.disable_endpoint(session, ids[1])
        page = webhooks.list_endpoints(session, after_id=ids[0], limit=2)
        active = webhooks.list_endpoints(session, include_disabled=False)
        assert [e.id for e in page] == ids[1:3]
        assert ids[1] not in [e.id for e in active] and len(active) == 4
        with pytest.raises(WebhookEndpointNotFound):
            webhooks.get_endpoint(session, 999)
        with pytest.raises(WebhookEndpointNotFound):
            webhooks.disable_endpoint(session, 999)
        with pytest.raises(WebhookEndpointNotFound):
            webhooks.list_deliveries(session, endpoint_id=999)
        with pytest.raises(WebhookDeliveryNotFound):
            webhooks.list_attempts(session, 999)
        total = session.execute(
            select(func.count()).select_from(webhook_deliveries_table)
        ).scalar_one()
    assert total == 0
