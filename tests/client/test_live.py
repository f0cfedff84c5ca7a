"""modelbank.client against a live server (uvicorn on a free port, migrated SQLite): every
method of the sync client, the async client on the money paths, typed errors (402 on an
empty wallet, 401, 404, 409, 422), generated idempotency keys and replays. Exact µcr."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modelbank.client import (
    AsyncClient,
    AuthError,
    Client,
    ConflictError,
    InsufficientFunds,
    NotFoundError,
    ValidationError,
    models,
)
from modelbank.client._client import _Endpoints, endpoint
from tests.client.conftest import Live

CR = 1_000_000
PRICE = {"input_ucr_per_mtok": 1_000_000, "output_ucr_per_mtok": 2_000_000}
"""1 µcr per input token, 2 per output token."""
_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}-{datetime.now(UTC).timestamp():.6f}"


@pytest.fixture
def admin(live: Live) -> Iterator[Client]:
    with Client(live.url, live.admin_key) as client:
        yield client


@pytest.fixture
def service(live: Live) -> Iterator[Client]:
    with Client(live.url, live.service_key) as client:
        yield client


def priced_model(admin: Client, **fields: object) -> models.Model:
    slug = unique("m")
    return admin.create_model(slug, slug, price=PRICE, **fields)


def test_users_and_keys(live: Live, admin: Client, service: Client) -> None:
    assert admin.healthz() == {"status": "ok"}
    with pytest.raises(AuthError) as forbidden:
        service.create_user(unique("alice"))
    assert forbidden.value.status == 403 and forbidden.value.code == "forbidden"
    made = admin.create_user(unique("alice"), display_name="Alice")
    assert isinstance(made, models.User) and made.display_name == "Alice"
    assert admin.get_user(made.id) == made
    with pytest.raises(ConflictError) as taken:
        admin.create_user(made.external_id)
    assert taken.value.status == 409 and taken.value.code == "user_exists"

    other = admin.create_user(unique("bob"))
    first = admin.list_users(limit=1)
    assert len(first.items) == 1 and first.next_cursor is not None
    everyone = admin.list_users(limit=500)
    assert {made.id, other.id} <= {u.id for u in everyone.items}
    assert admin.list_users(limit=1, cursor=first.next_cursor).items[0].id > first.items[0].id

    key = admin.create_user_key(made.id, name="alice's app")
    assert key.role == "user" and key.user_id == made.id and key.key.startswith("mb_")
    with Client(live.url, key.key) as alice:
        assert alice.wallet(made.id).balance_ucr == 0
        with pytest.raises(NotFoundError) as hidden:  # another user's wallet is not revealed
            alice.wallet(other.id)
        assert hidden.value.status == 404 and hidden.value.type.startswith("urn:modelbank:")
        with pytest.raises(AuthError) as forbidden:
            alice.create_user(unique("eve"))
        assert forbidden.value.status == 403
        # Alice's own keys: one for an app, limited to 1 credit a week, then revoked.
        app_key = alice.create_user_key(made.id, limit_ucr=1_000_000, limit_period="week")
        assert (app_key.limit_ucr, app_key.limit_period) == (1_000_000, "week")
        (listed,) = [k for k in alice.user_keys(made.id).items if k.id == app_key.id]
        assert listed.limit is not None and listed.limit.left_ucr == 1_000_000
        alice.revoke_user_key(made.id, app_key.id)
        assert app_key.id not in {k.id for k in alice.user_keys(made.id).items}
        revoked_too = alice.user_keys(made.id, include_revoked=True).items
        assert app_key.id in {k.id for k in revoked_too}

    spare = admin.create_service_key("service", name="spare")
    assert spare.role == "service" and spare.user_id is None
    admin.revoke_key(spare.id)
    with Client(live.url, spare.key) as revoked, pytest.raises(AuthError) as gone:
        revoked.get_user(made.id)
    assert gone.value.status == 401 and gone.value.code == "unauthenticated"


def test_models_list_get_create_and_buy_access(live: Live, admin: Client, service: Client) -> None:
    character = unique("char")
    model = priced_model(admin, character_id=character, category="Roleplay")
    assert model.character_id == character and model.price is not None
    assert model.price.input_ucr_per_mtok == "1000000"
    assert admin.get_model(model.id) == model
    found = admin.list_models(search=model.slug)
    assert [m.id for m in found.items] == [model.id]
    assert admin.list_models(category="Roleplay", limit=500).items[-1].category == "Roleplay"
    with pytest.raises(NotFoundError) as missing:
        admin.get_model(10**12)
    assert missing.value.code == "model_not_found"
    with pytest.raises(ConflictError) as linked:
        priced_model(admin, character_id=character)
    assert linked.value.code == "character_in_use"

    premium = priced_model(admin, is_premium=True, access_price_ucr=3 * CR)
    user = admin.create_user(unique("buyer"))
    admin.grant(user.id, 5 * CR, idempotency_key=unique("seed"))
    key = admin.create_user_key(user.id).key
    with Client(live.url, key) as buyer:
        bought = buyer.purchase_model_access(premium.id)
        assert (bought.price_ucr, bought.balance_ucr) == (3 * CR, 2 * CR)
        assert buyer.get_model(premium.id).purchased is True
        again = buyer.purchase_model_access(premium.id)  # buying again charges nothing
        assert (
            again.transfer_id == bought.transfer_id and buyer.wallet(user.id).balance_ucr == 2 * CR
        )


def test_charge_replay_402_and_typed_errors(admin: Client, service: Client) -> None:
    character = unique("char")
    model = priced_model(admin, character_id=character)
    user = admin.create_user(unique("payer"))
    granted = admin.grant(user.id, 10_000, idempotency_key=unique("g"))
    assert granted.balance_ucr == 10_000

    key = unique("req")
    first = service.charge(
        user.id, model=model.slug, input_tokens=1_000, output_tokens=500, idempotency_key=key
    )
    assert (first.charge_ucr, first.balance_ucr, first.replayed) == (2_000, 8_000, False)
    assert first.model_id == model.id
    replay = service.charge(
        user.id, model=model.slug, input_tokens=1_000, output_tokens=500, idempotency_key=key
    )
    assert replay.replayed is True and replay.usage_id == first.usage_id
    assert service.wallet(user.id).balance_ucr == 8_000  # charged once
    with pytest.raises(ConflictError) as reused:  # the same key with another body
        service.charge(user.id, model=model.slug, input_tokens=1, idempotency_key=key)
    assert reused.value.code == "idempotency_key_reused"

    # no key given: each call is a new event with its own generated key
    by_character = service.charge(user.id, character_id=character, input_tokens=100)
    again = service.charge(user.id, character_id=character, input_tokens=100)
    assert by_character.usage_id != again.usage_id and again.balance_ucr == 8_000 - 200

    with pytest.raises(InsufficientFunds) as short:
        service.charge(user.id, model=model.id, input_tokens=1_000_000)
    assert short.value.status == 402 and short.value.code == "insufficient_funds"
    assert short.value.type == "urn:modelbank:problem:insufficient_funds"
    assert service.wallet(user.id).balance_ucr == 7_800  # nothing was written
    empty = admin.create_user(unique("empty"))
    with pytest.raises(InsufficientFunds):
        service.charge(empty.id, model=model.id, input_tokens=1)
    assert service.wallet(empty.id).balance_ucr == 0

    with pytest.raises(ValidationError) as both:
        service.charge(user.id, model=model.id, character_id=character, input_tokens=1)
    assert both.value.status == 422 and both.value.body["errors"]
    with pytest.raises(NotFoundError) as unknown:
        service.charge(user.id, character_id=unique("nobody"), input_tokens=1)
    assert unknown.value.code == "character_not_found"


def test_batch_mixed_and_retry_safe(admin: Client, service: Client) -> None:
    character = unique("char")
    model = priced_model(admin, character_id=character)
    user = admin.create_user(unique("batch"))
    admin.grant(user.id, CR, idempotency_key=unique("g"))
    events: list[models.BatchEvent] = [
        {"user_id": user.id, "model": model.id, "input_tokens": 10, "idempotency_key": "b-1"},
        {"user_id": user.id, "character_id": character, "output_tokens": 10},
        {"user_id": user.id, "character_id": unique("nobody"), "input_tokens": 1},
    ]
    batch = service.charge_batch(events)
    assert (batch.charged, batch.replayed, batch.rejected) == (2, 0, 1)
    assert [r.charge_ucr for r in batch.results] == [10, 20, 0]
    assert batch.results[0].idempotency_key == "b-1"
    assert len(batch.results[1].idempotency_key) == 36  # a generated uuid4
    error = batch.results[2].error
    assert error is not None and error.code == "character_not_found"
    again = service.charge_batch(events[:1])
    assert again.replayed == 1 and service.wallet(user.id).balance_ucr == CR - 30


def test_wallet_reads_and_low_balance(admin: Client, service: Client) -> None:
    user = admin.create_user(unique("reader"))
    expires = datetime.now(UTC) + timedelta(days=30)
    admin.grant(user.id, 3 * CR, source="bonus", expires_at=expires, idempotency_key=unique("g"))
    wallet = service.wallet(user.id)
    assert (wallet.balance_ucr, wallet.available_ucr, wallet.balance) == (
        3 * CR,
        3 * CR,
        "3.000000 cr",
    )
    page = service.transfers(user.id, limit=10)
    assert [t.amount_ucr for t in page.items] == [3 * CR] and page.items[0].direction == "in"
    assert service.transfers(user.id, since=datetime.now(UTC) + timedelta(hours=1)).items == []
    grants = service.grants(user.id, open=True)
    assert [(g.source, g.remaining_ucr) for g in grants.items] == [("bonus", 3 * CR)]
    packages = service.packages()
    assert packages.items and all(p.credits_ucr > 0 and p.price_uusd > 0 for p in packages.items)

    assert service.low_balance(user.id).custom is False
    alert = service.set_low_balance(user.id, 5 * CR)
    assert (alert.threshold_ucr, alert.custom, alert.alerted) == (5 * CR, True, True)
    assert service.set_low_balance(user.id, None).custom is False


def test_purchase_confirm_and_refund(admin: Client, service: Client) -> None:
    user = admin.create_user(unique("shopper"))
    package = service.packages().items[0]
    started = service.start_purchase(user.id, package.id, provider="manual")
    assert (started.status, started.provider, started.grant_id) == ("pending", "manual", None)
    assert service.wallet(user.id).balance_ucr == 0
    confirmed = admin.confirm_purchase(started.id)
    assert confirmed.status == "completed" and confirmed.grant_id is not None
    assert service.wallet(user.id).balance_ucr == package.credits_ucr
    assert service.get_purchase(started.id) == confirmed
    assert [p.id for p in service.purchases(user.id).items] == [started.id]
    refund = admin.refund_purchase(started.id, amount_ucr=CR)
    assert refund.reversed_ucr == CR and refund.purchase.refunded_ucr == CR
    assert service.wallet(user.id).balance_ucr == package.credits_ucr - CR


def test_holds_capture_void_and_usage_refund(admin: Client, service: Client) -> None:
    character = unique("char")
    model = priced_model(admin, character_id=character)
    user = admin.create_user(unique("holder"))
    admin.grant(user.id, 10 * CR, idempotency_key=unique("g"))
    key = unique("hold")
    hold = service.place_hold(
        user.id, 4 * CR, timeout_s=60, character_id=character, idempotency_key=key
    )
    assert (hold.status, hold.model_id) == ("pending", model.id)
    assert (
        service.place_hold(
            user.id, 4 * CR, timeout_s=60, character_id=character, idempotency_key=key
        )
        == hold
    )  # replayed, not held twice
    assert service.wallet(user.id).available_ucr == 6 * CR
    with pytest.raises(InsufficientFunds):
        service.place_hold(user.id, 7 * CR, timeout_s=60)
    assert service.get_hold(hold.id) == hold
    assert [h.id for h in service.holds(user.id, status="pending").items] == [hold.id]

    captured = service.capture_hold(hold.id, CR, usage_type="chat", input_tokens=5)
    assert captured.charge_ucr == CR and captured.hold.status == "posted"
    assert service.wallet(user.id).balance_ucr == 9 * CR
    with pytest.raises(ConflictError) as twice:
        service.capture_hold(hold.id, CR)
    assert twice.value.code == "hold_not_pending"

    other = service.place_hold(user.id, 2 * CR, timeout_s=60, model=model.slug)
    voided = service.void_hold(other.id)
    assert voided.status == "voided" and service.wallet(user.id).available_ucr == 9 * CR

    assert captured.usage_id is not None
    refund = admin.refund_usage(captured.usage_id, amount_ucr=CR // 2, reason="bad answer")
    assert (refund.amount_ucr, refund.refunded_total_ucr) == (CR // 2, CR // 2)
    assert service.wallet(user.id).balance_ucr == 9 * CR + CR // 2


def test_analytics_reads(admin: Client, service: Client) -> None:
    creator = admin.create_user(unique("creator"))
    model = priced_model(admin, creator_id=creator.id)
    user = admin.create_user(unique("fan"))
    admin.grant(user.id, CR, idempotency_key=unique("g"))
    service.charge(user.id, model=model.id, input_tokens=10_000)

    earned = service.earnings(creator.id, period="all")
    assert earned.total_uses == 1 and earned.models[0].model_id == model.id
    assert earned.total_ucr == earned.models[0].earnings_ucr > 0
    dashboard = service.creator_analytics(creator.id, period="30d", model_id=model.id)
    assert dashboard.model_id == model.id and dashboard.uses == 1
    spending = service.model_analytics(user.id, period="30d")
    assert spending.spent_ucr == 10_000 and spending.uses == 1
    platform = admin.admin_analytics(period="7d")
    assert platform.period == "7d" and isinstance(platform.totals, dict)
    stats = admin.stats()
    assert stats.usage_events >= 1 and stats.users >= 2
    with pytest.raises(AuthError):
        service.stats()


def test_async_client_on_the_money_paths(live: Live) -> None:
    async def scenario() -> None:
        async with (
            AsyncClient(live.url, live.admin_key) as admin,
            AsyncClient(live.url, live.service_key) as service,
        ):
            slug = unique("am")
            model = await admin.create_model(slug, slug, price=PRICE)
            user = await admin.create_user(unique("async"))
            with pytest.raises(InsufficientFunds):
                await service.charge(user.id, model=model.id, input_tokens=1)
            await admin.grant(user.id, 1_000, idempotency_key=unique("g"))
            key = unique("req")
            first, second = await asyncio.gather(
                service.charge(user.id, model=slug, input_tokens=100, idempotency_key=key),
                service.wallet(user.id),
            )
            assert first.charge_ucr == 100 and second.user_id == user.id
            replay = await service.charge(
                user.id, model=slug, input_tokens=100, idempotency_key=key
            )
            assert replay.replayed and replay.usage_id == first.usage_id
            assert (await service.wallet(user.id)).balance_ucr == 900
            hold = await service.place_hold(user.id, 500, timeout_s=60, model=model.id)
            assert (await service.void_hold(hold.id)).status == "voided"
            batch = await service.charge_batch([{"user_id": user.id, "model": slug, "units": 0}])
            assert batch.charged == 1

    asyncio.run(scenario())


def test_every_client_method_is_exercised_here() -> None:
    """The tests above call every public method of the client at least once."""
    methods = {name for name, value in vars(_Endpoints).items() if isinstance(value, endpoint)}
    assert len(methods) >= 35
    source = Path(__file__).read_text()
    called = {name for name in methods if re.search(rf"\.{name}\(", source)}
    assert methods - called == set()
    for name in methods:  # each documented (the docstring is the operation's)
        assert inspect.getdoc(getattr(_Endpoints, name)), name
