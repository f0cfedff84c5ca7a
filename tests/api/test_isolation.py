"""Isolation matrix over the app's route table: for every /api/v1 route, what another user's
key and an anonymous call get on user A's resources.

The parameters come from ``app.routes``, so a new route fails here until it is added to
``TABLE`` with how to call it and what a stranger must get.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.routing import APIRoute

from modelbank.api import create_app
from modelbank.config import load_settings
from modelbank.db.engine import make_engine
from modelbank.marketplace import service as market
from modelbank.pool import service as pool
from modelbank.secrets import SecretBox
from modelbank.users import service as users
from tests.api.conftest import TEST_SECRET_KEY, Api, problem


def _api_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, APIRoute]]:
    """Every APIRoute under ``routes`` with its full path. FastAPI ≥ 0.16x wraps included
    routers in a lazy ``_IncludedRouter`` (``original_router`` + ``include_context``); older
    versions copy the APIRoutes into ``app.routes``. Both are walked."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from _api_routes(inner.routes, prefix + getattr(context, "prefix", ""))


def _routes() -> list[tuple[str, str]]:
    app = create_app(load_settings(database_url="sqlite://"), engine=make_engine("sqlite://"))
    found = {
        (method, path)
        for path, route in _api_routes(app.routes)
        if path.startswith("/api/v1")
        for method in route.methods
    }
    # Cross-check with the published schema: the walk above must not miss anything there.
    published = {
        (method.upper(), path)
        for path, ops in app.openapi()["paths"].items()
        if path.startswith("/api/v1")
        for method in ops
    }
    assert published <= found, f"route walk missed {sorted(published - found)}"
    return sorted(found)


ROUTES = _routes()


@dataclass
class World:
    """User A with credits, a key and a premium model of their own, a pending (manual)
    purchase, a pending hold and a usage charge; user B with credits, who used A's free
    model, whose earnings fund A's pending payout."""

    a: int
    a_headers: dict[str, str]
    a_key_id: int
    b: int
    b_headers: dict[str, str]
    model_id: int
    package_id: int = 0
    purchase_id: int = 0
    hold_id: int = 0
    usage_id: int = 0
    payout_id: int = 0
    resource_id: int = 0
    listing_id: int = 0
    other_listing_id: int = 0
    order_id: int = 0
    allocation_id: int = 0
    dispute_id: int = 0
    plan_id: int = 0
    subscription_id: int = 0
    promo_id: int = 0
    b_code: str = ""


def _marketplace(session: Any, w: World) -> None:
    """A's quota listing on A's resource; a third user's listing A bought from twice (an
    order and an allocation of A's, and a second allocation A disputes)."""
    w.listing_id = market.create_listing(
        session,
        w.a,
        kind="quota",
        resource_id=w.resource_id,
        quantity=200_000,
        unit_price_ucr=100_000_000,
        min_fill=10_000,
    ).id
    seller = users.create_user(session, "market-seller").id
    other = pool.register(
        session,
        seller,
        provider="openai",
        base_url="https://api.example.com/v1",
        api_key="sk-world-seller-000000000",
        models=[("public", "gpt-4o")],
        quota_uusd=1_000_000,
        market_quota_uusd=500_000,
        box=SecretBox(TEST_SECRET_KEY),
    )
    pool.activate(session, other.id)
    w.other_listing_id = market.create_listing(
        session,
        seller,
        kind="quota",
        resource_id=other.id,
        quantity=300_000,
        unit_price_ucr=100_000_000,
        min_fill=10_000,
    ).id
    bought = market.buy(session, w.other_listing_id, w.a, 10_000, idempotency_key="world-buy")
    w.order_id, w.allocation_id = bought.order.id, bought.allocations[0].id
    disputed = market.buy(session, w.other_listing_id, w.a, 10_000, idempotency_key="world-b2")
    w.dispute_id = market.open_dispute(
        session, disputed.allocations[0].id, w.a, "it never answered"
    ).id


def world(api: Api) -> World:
    a, a_headers = api.user("alice", credits_ucr=5_000_000)
    b, b_headers = api.user("bob", credits_ucr=5_000_000)
    r = api.client.post(f"/api/v1/users/{a}/keys", json={"name": "spare"}, headers=api.admin)
    model = api.model("alices", creator_id=a, is_premium=True, access_price_ucr=1_000)
    api.model("public")
    w = World(a, a_headers, int(r.json()["id"]), b, b_headers, int(model["id"]))
    c = api.client
    w.package_id = int(c.get("/api/v1/packages", headers=a_headers).json()["items"][0]["id"])
    bought = c.post(
        f"/api/v1/users/{a}/purchases", json={"package_id": w.package_id}, headers=a_headers
    )
    held = c.post(
        f"/api/v1/users/{a}/holds",
        json={"amount_ucr": 1_000_000, "timeout_s": 600, "model": "public"},
        headers={**a_headers, "Idempotency-Key": "world-hold"},
    )
    used = api.charge(a, "public", key="world-usage", input_tokens=1_000)
    assert bought.status_code == held.status_code == used.status_code == 201, (
        bought.text + held.text + used.text
    )
    w.purchase_id, w.hold_id = int(bought.json()["id"]), int(held.json()["id"])
    w.usage_id = int(used.json()["usage_id"])
    # A earns from B's use of a free model of A's (160,000 µcr: 20 % × chat 0.8 of 1 credit)
    # and has a pending payout of 100,000 µcr, 60,000 µcr still available
    api.model("alices-free", creator_id=a)
    earned = api.charge(b, "alices-free", key="world-earn", input_tokens=1_000_000)
    minimum = c.put("/api/v1/admin/payout-minimum", json={"minimum_ucr": 10_000}, headers=api.admin)
    payout = c.post(
        f"/api/v1/users/{a}/payouts",
        json={"amount_ucr": 100_000},
        headers={**a_headers, "Idempotency-Key": "world-payout"},
    )
    assert earned.status_code == payout.status_code == 201 and minimum.status_code == 200, (
        earned.text + payout.text
    )
    w.payout_id = int(payout.json()["id"])
    # A's provider key in the pool (registered and activated directly: no probe)
    with api.db.tx() as session:
        deposited = pool.register(
            session,
            a,
            provider="openai",
            base_url="https://api.example.com/v1",
            api_key="sk-world-key-0000000000",
            models=[("public", "gpt-4o")],
            quota_uusd=1_000_000,
            market_quota_uusd=500_000,
            box=SecretBox(TEST_SECRET_KEY),
        )
        w.resource_id = pool.activate(session, deposited.id).id
        _marketplace(session, w)
    # a plan, A's pending manual subscription, a promo code and B's referral code
    plan = c.post(
        "/api/v1/admin/plans",
        json={"slug": "world", "name": "World", "price_uusd": 10_000, "credits_ucr": 1_000},
        headers=api.admin,
    )
    sub = c.post(
        f"/api/v1/users/{a}/subscriptions",
        json={"plan_id": plan.json()["id"], "provider": "manual"},
        headers=a_headers,
    )
    promo = c.post(
        "/api/v1/admin/promo-codes", json={"code": "WORLD", "bonus_ucr": 10}, headers=api.admin
    )
    code = c.get(f"/api/v1/users/{b}/referral", headers=b_headers)
    assert plan.status_code == sub.status_code == promo.status_code == 201, sub.text
    w.plan_id, w.subscription_id = int(plan.json()["id"]), int(sub.json()["id"])
    w.promo_id, w.b_code = int(promo.json()["id"]), str(code.json()["code"])
    return w


Request = Callable[[World], tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class Case:
    """How to call a route on A's resources (url and request kwargs; headers added by the
    test), what user B's key must get, who may make the call, and what they get."""

    request: Request
    as_other: int
    owner: str  # "user": A's own key; "admin": the admin key
    owner_status: int | None
    note: str = ""
    keyless: tuple[int, str] | None = None
    """A route that takes no API key (authenticated otherwise, e.g. by a signature): the
    problem (status, code) every caller gets, with or without a key."""


def idem(key: str, **kwargs: Any) -> dict[str, Any]:
    return {"headers": {"Idempotency-Key": key}, **kwargs}


OWN = 404  # another user's resources do not exist for B
POOL_DEPOSIT = {
    "provider": "vllm",
    "base_url": "http://127.0.0.1:9/v1",
    "api_key": "sk-another-key-000000000",
    "models": [{"model": "public", "upstream_model": "m"}],
    "quota_uusd": 1_000_000,
}
ADMIN_ONLY = 403

TABLE: dict[tuple[str, str], Case] = {
    # --- plans, subscriptions, referrals, promo codes (issue 13)
    ("GET", "/api/v1/plans"): Case(lambda w: ("/api/v1/plans", {}), 200, "user", 200),
    ("POST", "/api/v1/admin/plans"): Case(
        lambda w: (
            "/api/v1/admin/plans",
            {"json": {"slug": "p2", "name": "P2", "price_uusd": 10_000, "credits_ucr": 5}},
        ),
        ADMIN_ONLY,
        "admin",
        201,
    ),
    ("PATCH", "/api/v1/admin/plans/{plan_id}"): Case(
        lambda w: (f"/api/v1/admin/plans/{w.plan_id}", {"json": {"name": "Renamed"}}),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    ("POST", "/api/v1/users/{user_id}/subscriptions"): Case(
        lambda w: (
            f"/api/v1/users/{w.a}/subscriptions",
            {"json": {"plan_id": w.plan_id, "provider": "manual"}},
        ),
        OWN,
        "user",
        201,
    ),
    ("GET", "/api/v1/users/{user_id}/subscriptions"): Case(
        lambda w: (f"/api/v1/users/{w.a}/subscriptions", {}), OWN, "user", 200
    ),
    ("GET", "/api/v1/subscriptions/{subscription_id}"): Case(
        lambda w: (f"/api/v1/subscriptions/{w.subscription_id}", {}), OWN, "user", 200
    ),
    ("GET", "/api/v1/subscriptions/{subscription_id}/periods"): Case(
        lambda w: (f"/api/v1/subscriptions/{w.subscription_id}/periods", {}), OWN, "user", 200
    ),
    ("POST", "/api/v1/subscriptions/{subscription_id}/cancel"): Case(
        lambda w: (f"/api/v1/subscriptions/{w.subscription_id}/cancel", {}), OWN, "user", 200
    ),
    ("POST", "/api/v1/admin/subscriptions/{subscription_id}/periods"): Case(
        lambda w: (f"/api/v1/admin/subscriptions/{w.subscription_id}/periods", idem("sp")),
        ADMIN_ONLY,
        "admin",
        201,
    ),
    ("GET", "/api/v1/users/{user_id}/referral"): Case(
        lambda w: (f"/api/v1/users/{w.a}/referral", {}), OWN, "user", 200
    ),
    ("POST", "/api/v1/users/{user_id}/referral"): Case(
        lambda w: (f"/api/v1/users/{w.a}/referral", {"json": {"code": w.b_code}}),
        OWN,
        "user",
        200,
    ),
    ("GET", "/api/v1/admin/referral-settings"): Case(
        lambda w: ("/api/v1/admin/referral-settings", {}), ADMIN_ONLY, "admin", 200
    ),
    ("PUT", "/api/v1/admin/referral-settings"): Case(
        lambda w: ("/api/v1/admin/referral-settings", {"json": {"referral_bonus_ttl_s": 60}}),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    ("POST", "/api/v1/admin/promo-codes"): Case(
        lambda w: ("/api/v1/admin/promo-codes", {"json": {"code": "P2", "bonus_ucr": 1}}),
        ADMIN_ONLY,
        "admin",
        201,
    ),
    ("GET", "/api/v1/admin/promo-codes"): Case(
        lambda w: ("/api/v1/admin/promo-codes", {}), ADMIN_ONLY, "admin", 200
    ),
    ("POST", "/api/v1/admin/promo-codes/{promo_id}/deactivate"): Case(
        lambda w: (f"/api/v1/admin/promo-codes/{w.promo_id}/deactivate", {}),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    ("POST", "/api/v1/users/{user_id}/promo-redemptions"): Case(
        lambda w: (f"/api/v1/users/{w.a}/promo-redemptions", {"json": {"code": "WORLD"}}),
        OWN,
        "user",
        201,
    ),
    ("GET", "/api/v1/users/{user_id}/promo-redemptions"): Case(
        lambda w: (f"/api/v1/users/{w.a}/promo-redemptions", {}), OWN, "user", 200
    ),
    ("POST", "/api/v1/users"): Case(
        lambda w: ("/api/v1/users", {"json": {"external_id": "carol"}}), ADMIN_ONLY, "admin", 201
    ),
    ("GET", "/api/v1/users"): Case(lambda w: ("/api/v1/users", {}), ADMIN_ONLY, "admin", 200),
    ("GET", "/api/v1/users/{user_id}"): Case(
        lambda w: (f"/api/v1/users/{w.a}", {}), OWN, "user", 200
    ),
    ("POST", "/api/v1/users/{user_id}/keys"): Case(
        lambda w: (f"/api/v1/users/{w.a}/keys", {"json": {"limit_ucr": 5}}), OWN, "user", 201
    ),
    ("GET", "/api/v1/users/{user_id}/keys"): Case(
        lambda w: (f"/api/v1/users/{w.a}/keys", {}), OWN, "user", 200
    ),
    ("DELETE", "/api/v1/users/{user_id}/keys/{key_id}"): Case(
        lambda w: (f"/api/v1/users/{w.a}/keys/{w.a_key_id}", {}), OWN, "user", 204
    ),
    ("PATCH", "/api/v1/users/{user_id}/keys/{key_id}"): Case(
        lambda w: (f"/api/v1/users/{w.a}/keys/{w.a_key_id}", {"json": {"limit_ucr": 5}}),
        OWN,
        "user",
        200,
    ),
    ("POST", "/api/v1/users/{user_id}/grants"): Case(
        lambda w: (f"/api/v1/users/{w.a}/grants", idem("g", json={"amount_ucr": 5})),
        ADMIN_ONLY,
        "admin",
        201,
    ),
    ("GET", "/api/v1/users/{user_id}/wallet"): Case(
        lambda w: (f"/api/v1/users/{w.a}/wallet", {}), OWN, "user", 200
    ),
    ("GET", "/api/v1/users/{user_id}/transfers"): Case(
        # filtered to an empty page: non-empty listings hit the ledger/queries.py:95 bug
        lambda w: (f"/api/v1/users/{w.a}/transfers", {"params": {"code": "refund"}}),
        OWN,
        "user",
        200,
    ),
    ("GET", "/api/v1/users/{user_id}/earnings"): Case(
        lambda w: (f"/api/v1/users/{w.a}/earnings", {"params": {"period": "30d"}}),
        OWN,
        "user",
        200,
    ),
    ("GET", "/api/v1/users/{user_id}/model-analytics"): Case(
        lambda w: (f"/api/v1/users/{w.a}/model-analytics", {"params": {"period": "7d"}}),
        OWN,
        "user",
        200,
    ),
    ("GET", "/api/v1/users/{user_id}/creator-analytics"): Case(
        lambda w: (
            f"/api/v1/users/{w.a}/creator-analytics",
            {"params": {"period": "90d", "model_id": w.model_id}},
        ),
        OWN,
        "user",
        200,
    ),
    ("GET", "/api/v1/admin/analytics"): Case(
        lambda w: ("/api/v1/admin/analytics", {"params": {"period": "365d"}}),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    ("GET", "/api/v1/models"): Case(lambda w: ("/api/v1/models", {}), 200, "user", 200),
    ("POST", "/api/v1/models"): Case(
        lambda w: ("/api/v1/models", {"json": {"slug": "new", "name": "new", "price": {}}}),
        ADMIN_ONLY,
        "admin",
        201,
    ),
    ("GET", "/api/v1/models/{model_id}"): Case(
        lambda w: (f"/api/v1/models/{w.model_id}", {}), 200, "user", 200
    ),
    ("PATCH", "/api/v1/models/{model_id}"): Case(
        lambda w: (f"/api/v1/models/{w.model_id}", {"json": {"access_price_ucr": 0}}),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    ("DELETE", "/api/v1/models/{model_id}"): Case(
        lambda w: (f"/api/v1/models/{w.model_id}", {}), ADMIN_ONLY, "admin", 200
    ),
    ("POST", "/api/v1/models/{model_id}/purchase"): Case(
        # B buying for A; A (the creator) gets access for free
        lambda w: (f"/api/v1/models/{w.model_id}/purchase", idem("p", json={"user_id": w.a})),
        OWN,
        "user",
        201,
    ),
    ("POST", "/api/v1/usage"): Case(
        lambda w: (
            "/api/v1/usage",
            idem("u", json={"user_id": w.a, "model": "public", "input_tokens": 100}),
        ),
        OWN,
        "user",
        201,
    ),
    ("POST", "/api/v1/usage/batch"): Case(
        lambda w: (
            "/api/v1/usage/batch",
            {
                "json": {
                    "events": [
                        {"idempotency_key": "x", "user_id": w.a, "model": "public", "units": 1}
                    ]
                }
            },
        ),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    ("POST", "/api/v1/admin/keys"): Case(
        lambda w: ("/api/v1/admin/keys", {"json": {"role": "admin"}}), ADMIN_ONLY, "admin", 201
    ),
    ("DELETE", "/api/v1/admin/keys/{key_id}"): Case(
        lambda w: (f"/api/v1/admin/keys/{w.a_key_id}", {}), ADMIN_ONLY, "admin", 204
    ),
    ("GET", "/api/v1/admin/pricing"): Case(
        lambda w: ("/api/v1/admin/pricing", {}), ADMIN_ONLY, "admin", 200
    ),
    ("POST", "/api/v1/admin/pricing/recalculate"): Case(
        lambda w: ("/api/v1/admin/pricing/recalculate", {"json": {}}), ADMIN_ONLY, "admin", 200
    ),
    ("POST", "/api/v1/admin/pricing/what-if"): Case(
        lambda w: (
            "/api/v1/admin/pricing/what-if",
            {"json": {"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}},
        ),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    ("GET", "/api/v1/admin/stats"): Case(
        lambda w: ("/api/v1/admin/stats", {}), ADMIN_ONLY, "admin", 200
    ),
    ("POST", "/api/v1/admin/webhooks"): Case(
        lambda w: (
            "/api/v1/admin/webhooks",
            {"json": {"url": "https://example.com/hook", "events": ["*"]}},
        ),
        ADMIN_ONLY,
        "admin",
        201,
    ),
    ("GET", "/api/v1/admin/webhooks"): Case(
        lambda w: ("/api/v1/admin/webhooks", {}), ADMIN_ONLY, "admin", 200
    ),
    # the World has no webhook endpoint: the admin's calls get past auth to a 404
    ("GET", "/api/v1/admin/webhooks/{webhook_id}"): Case(
        lambda w: ("/api/v1/admin/webhooks/1", {}), ADMIN_ONLY, "admin", 404
    ),
    ("DELETE", "/api/v1/admin/webhooks/{webhook_id}"): Case(
        lambda w: ("/api/v1/admin/webhooks/1", {}), ADMIN_ONLY, "admin", 404
    ),
    ("GET", "/api/v1/admin/webhooks/{webhook_id}/deliveries"): Case(
        lambda w: ("/api/v1/admin/webhooks/1/deliveries", {}), ADMIN_ONLY, "admin", 404
    ),
    # --- wallets: packages (any key reads them; admins edit them)
    ("GET", "/api/v1/packages"): Case(lambda w: ("/api/v1/packages", {}), 200, "user", 200),
    ("POST", "/api/v1/admin/packages"): Case(
        lambda w: (
            "/api/v1/admin/packages",
            {"json": {"slug": "mini", "name": "Mini", "credits_ucr": 1, "price_uusd": 10_000}},
        ),
        ADMIN_ONLY,
        "admin",
        201,
    ),
    ("PATCH", "/api/v1/admin/packages/{package_id}"): Case(
        lambda w: (f"/api/v1/admin/packages/{w.package_id}", {"json": {"name": "Renamed"}}),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    # --- wallets: purchases
    ("POST", "/api/v1/users/{user_id}/purchases"): Case(
        lambda w: (f"/api/v1/users/{w.a}/purchases", {"json": {"package_id": w.package_id}}),
        OWN,
        "user",
        201,
    ),
    ("GET", "/api/v1/users/{user_id}/purchases"): Case(
        lambda w: (f"/api/v1/users/{w.a}/purchases", {}), OWN, "user", 200
    ),
    ("GET", "/api/v1/purchases/{purchase_id}"): Case(
        lambda w: (f"/api/v1/purchases/{w.purchase_id}", {}), OWN, "user", 200
    ),
    ("GET", "/api/v1/admin/purchases"): Case(
        lambda w: ("/api/v1/admin/purchases", {}), ADMIN_ONLY, "admin", 200
    ),
    ("POST", "/api/v1/admin/purchases/{purchase_id}/confirm"): Case(
        lambda w: (f"/api/v1/admin/purchases/{w.purchase_id}/confirm", idem("c")),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    ("POST", "/api/v1/purchases/{purchase_id}/refund"): Case(
        lambda w: (f"/api/v1/purchases/{w.purchase_id}/refund", idem("r", json={})),
        ADMIN_ONLY,
        "admin",
        409,
        note="the World's purchase is still pending: the admin gets past auth to a 409",
    ),
    # No API key: Stripe authenticates its deliveries by the Stripe-Signature header. The
    # isolation app has no Stripe secrets, so every caller, with a key or without, gets 422
    # payment_provider_not_configured (api/errors.py: a provider this installation does not
    # offer) and nothing changes; with Stripe configured a missing or forged signature is a
    # 400 (tests/api/test_wallets.py::test_stripe_forged_signature_is_400_and_changes_nothing).
    ("POST", "/api/v1/webhooks/stripe"): Case(
        lambda w: ("/api/v1/webhooks/stripe", {"content": b'{"id": "evt_1"}'}),
        400,
        "admin",
        None,
        keyless=(422, "payment_provider_not_configured"),
    ),
    # --- wallets: grants, holds, refunds
    ("GET", "/api/v1/users/{user_id}/grants"): Case(
        lambda w: (f"/api/v1/users/{w.a}/grants", {}), OWN, "user", 200
    ),
    ("POST", "/api/v1/users/{user_id}/holds"): Case(
        lambda w: (
            f"/api/v1/users/{w.a}/holds",
            idem("h", json={"amount_ucr": 1_000, "timeout_s": 60}),
        ),
        OWN,
        "user",
        201,
    ),
    ("GET", "/api/v1/users/{user_id}/holds"): Case(
        lambda w: (f"/api/v1/users/{w.a}/holds", {}), OWN, "user", 200
    ),
    ("GET", "/api/v1/holds/{hold_id}"): Case(
        lambda w: (f"/api/v1/holds/{w.hold_id}", {}), OWN, "user", 200
    ),
    ("POST", "/api/v1/holds/{hold_id}/capture"): Case(
        lambda w: (f"/api/v1/holds/{w.hold_id}/capture", idem("cap", json={"amount_ucr": 500})),
        OWN,
        "user",
        200,
    ),
    ("POST", "/api/v1/holds/{hold_id}/void"): Case(
        lambda w: (f"/api/v1/holds/{w.hold_id}/void", idem("v")), OWN, "user", 200
    ),
    ("POST", "/api/v1/usage/{usage_id}/refund"): Case(
        lambda w: (f"/api/v1/usage/{w.usage_id}/refund", idem("ur", json={})),
        ADMIN_ONLY,
        "admin",
        201,
    ),
    # --- payouts: A's pending payout (World); A may still withdraw 60,000 µcr
    ("POST", "/api/v1/users/{user_id}/payouts"): Case(
        lambda w: (f"/api/v1/users/{w.a}/payouts", idem("po", json={"amount_ucr": 10_000})),
        OWN,
        "user",
        201,
    ),
    ("GET", "/api/v1/users/{user_id}/payouts"): Case(
        lambda w: (f"/api/v1/users/{w.a}/payouts", {}), OWN, "user", 200
    ),
    ("GET", "/api/v1/payouts/{payout_id}"): Case(
        lambda w: (f"/api/v1/payouts/{w.payout_id}", {}), OWN, "user", 200
    ),
    ("POST", "/api/v1/payouts/{payout_id}/cancel"): Case(
        lambda w: (f"/api/v1/payouts/{w.payout_id}/cancel", idem("pc")), OWN, "user", 200
    ),
    ("GET", "/api/v1/admin/payouts"): Case(
        lambda w: ("/api/v1/admin/payouts", {}), ADMIN_ONLY, "admin", 200
    ),
    ("POST", "/api/v1/admin/payouts/{payout_id}/complete"): Case(
        lambda w: (
            f"/api/v1/admin/payouts/{w.payout_id}/complete",
            idem("pco", json={"external_reference": "wire-1"}),
        ),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    ("POST", "/api/v1/admin/payouts/{payout_id}/fail"): Case(
        lambda w: (f"/api/v1/admin/payouts/{w.payout_id}/fail", idem("pf", json={"reason": "x"})),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    ("GET", "/api/v1/admin/audit"): Case(
        lambda w: ("/api/v1/admin/audit", {"params": {"action": "key."}}), ADMIN_ONLY, "admin", 200
    ),
    ("GET", "/api/v1/admin/audit.csv"): Case(
        lambda w: ("/api/v1/admin/audit.csv", {}), ADMIN_ONLY, "admin", 200
    ),
    ("PUT", "/api/v1/admin/payout-minimum"): Case(
        lambda w: ("/api/v1/admin/payout-minimum", {"json": {"minimum_ucr": 1_000}}),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    # --- wallets: low-balance alerts, statement
    ("GET", "/api/v1/users/{user_id}/low-balance"): Case(
        lambda w: (f"/api/v1/users/{w.a}/low-balance", {}), OWN, "user", 200
    ),
    ("PUT", "/api/v1/users/{user_id}/low-balance"): Case(
        lambda w: (f"/api/v1/users/{w.a}/low-balance", {"json": {"threshold_ucr": 1_000}}),
        OWN,
        "user",
        200,
    ),
    ("PUT", "/api/v1/admin/low-balance-default"): Case(
        lambda w: ("/api/v1/admin/low-balance-default", {"json": {"threshold_ucr": 1_000}}),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    ("GET", "/api/v1/users/{user_id}/statement.csv"): Case(
        lambda w: (f"/api/v1/users/{w.a}/statement.csv", {}), OWN, "user", 200
    ),
    # --- auto top-up and email notices (issue 13)
    ("GET", "/api/v1/users/{user_id}/auto-topup"): Case(
        lambda w: (f"/api/v1/users/{w.a}/auto-topup", {}), OWN, "user", 200
    ),
    ("PUT", "/api/v1/users/{user_id}/auto-topup"): Case(
        lambda w: (
            f"/api/v1/users/{w.a}/auto-topup",
            {
                "json": {
                    "enabled": False,
                    "threshold_ucr": 1_000,
                    "package_id": w.package_id,
                    "monthly_cap_count": 1,
                    "monthly_cap_uusd": 5_000_000,
                }
            },
        ),
        OWN,
        "user",
        200,
    ),
    ("POST", "/api/v1/users/{user_id}/auto-topup/payment-method"): Case(
        lambda w: (f"/api/v1/users/{w.a}/auto-topup/payment-method", {}),
        OWN,
        "user",
        422,
        note="Stripe is not configured in this World: payment_provider_not_configured",
    ),
    ("GET", "/api/v1/users/{user_id}/email-notices"): Case(
        lambda w: (f"/api/v1/users/{w.a}/email-notices", {}), OWN, "user", 200
    ),
    ("PUT", "/api/v1/users/{user_id}/email-notices"): Case(
        lambda w: (f"/api/v1/users/{w.a}/email-notices", {"json": {"email": "a@example.com"}}),
        OWN,
        "user",
        200,
    ),
    # --- creator economy: stakes in A's model, rules, monetisation, a usage explained. The
    # World has no stake listing: listing 999999 does not exist, so buying or cancelling it
    # gets past auth to a 404 (B names A as buyer: 404 user_not_found first).
    ("GET", "/api/v1/models/{model_id}/stakes"): Case(
        lambda w: (f"/api/v1/models/{w.model_id}/stakes", {}), 200, "user", 200
    ),
    ("POST", "/api/v1/models/{model_id}/stakes"): Case(
        lambda w: (
            f"/api/v1/models/{w.model_id}/stakes",
            {"json": {"stakes": [{"user_id": w.a, "share_bps": 10_000}]}},
        ),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    ("GET", "/api/v1/models/{model_id}/stakes/listings"): Case(
        lambda w: (f"/api/v1/models/{w.model_id}/stakes/listings", {}), 200, "user", 200
    ),
    ("POST", "/api/v1/models/{model_id}/stakes/listings"): Case(
        lambda w: (
            f"/api/v1/models/{w.model_id}/stakes/listings",
            {"json": {"share_bps": 1_000, "price_ucr": 5, "seller_id": w.a}},
        ),
        OWN,
        "user",
        201,
    ),
    ("POST", "/api/v1/models/{model_id}/stakes/listings/{listing_id}/buy"): Case(
        lambda w: (
            f"/api/v1/models/{w.model_id}/stakes/listings/999999/buy",
            idem("sb", json={"buyer_id": w.a}),
        ),
        OWN,
        "user",
        404,
    ),
    ("POST", "/api/v1/models/{model_id}/stakes/listings/{listing_id}/cancel"): Case(
        lambda w: (f"/api/v1/models/{w.model_id}/stakes/listings/999999/cancel", {}),
        OWN,
        "user",
        404,
    ),
    ("GET", "/api/v1/models/{model_id}/earnings-rule"): Case(
        lambda w: (f"/api/v1/models/{w.model_id}/earnings-rule", {}), 200, "user", 200
    ),
    ("PUT", "/api/v1/models/{model_id}/earnings-rule"): Case(
        lambda w: (f"/api/v1/models/{w.model_id}/earnings-rule", {"json": {"per_use_ucr": 1}}),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    ("GET", "/api/v1/models/{model_id}/monetisation"): Case(
        lambda w: (f"/api/v1/models/{w.model_id}/monetisation", {}), 200, "user", 200
    ),
    ("PUT", "/api/v1/models/{model_id}/monetisation"): Case(
        lambda w: (f"/api/v1/models/{w.model_id}/monetisation", {"json": {"enabled": False}}),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    ("GET", "/api/v1/admin/monetisation"): Case(
        lambda w: ("/api/v1/admin/monetisation", {}), ADMIN_ONLY, "admin", 200
    ),
    ("PUT", "/api/v1/admin/monetisation"): Case(
        lambda w: ("/api/v1/admin/monetisation", {"json": {"enabled": False}}),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    ("GET", "/api/v1/usage/{usage_id}/earnings"): Case(
        lambda w: (f"/api/v1/usage/{w.usage_id}/earnings", {}), OWN, "user", 200
    ),
    # --- resource pool: A's deposited key. New deposits point at a closed local port: the
    # probe's connect error leaves them pending (201) without touching the network.
    ("POST", "/api/v1/users/{user_id}/resources"): Case(
        lambda w: (f"/api/v1/users/{w.a}/resources", idem("dep", json=POOL_DEPOSIT)),
        OWN,
        "user",
        201,
    ),
    ("GET", "/api/v1/users/{user_id}/resources"): Case(
        lambda w: (f"/api/v1/users/{w.a}/resources", {}), OWN, "user", 200
    ),
    ("GET", "/api/v1/resources/{resource_id}"): Case(
        lambda w: (f"/api/v1/resources/{w.resource_id}", {}), OWN, "user", 200
    ),
    ("POST", "/api/v1/resources/{resource_id}/withdraw"): Case(
        lambda w: (f"/api/v1/resources/{w.resource_id}/withdraw", idem("wd")), OWN, "user", 200
    ),
    ("POST", "/api/v1/admin/resources"): Case(
        lambda w: ("/api/v1/admin/resources", {"json": POOL_DEPOSIT}), ADMIN_ONLY, "admin", 201
    ),
    ("GET", "/api/v1/admin/pool"): Case(
        lambda w: ("/api/v1/admin/pool", {}), ADMIN_ONLY, "admin", 200
    ),
    ("GET", "/api/v1/resources/{resource_id}/route-logs"): Case(
        lambda w: (f"/api/v1/resources/{w.resource_id}/route-logs", {}), OWN, "user", 200
    ),
    # --- marketplace: listings are public; editing A's listing, A's orders, allocations and
    # disputes are A's (404 for B); buying or listing names the user it acts for (B naming
    # A: 404 user_not_found). A buys from a third user's listing (A cannot buy its own).
    ("GET", "/api/v1/marketplace/listings"): Case(
        lambda w: ("/api/v1/marketplace/listings", {}), 200, "user", 200
    ),
    ("POST", "/api/v1/marketplace/listings"): Case(
        lambda w: (
            "/api/v1/marketplace/listings",
            {
                "json": {
                    "kind": "quota",
                    "resource_id": w.resource_id,
                    "quantity": 10_000,
                    "unit_price_ucr": 1,
                    "seller_id": w.a,
                }
            },
        ),
        OWN,
        "user",
        201,
    ),
    ("GET", "/api/v1/marketplace/listings/{listing_id}"): Case(
        lambda w: (f"/api/v1/marketplace/listings/{w.listing_id}", {}), 200, "user", 200
    ),
    ("PATCH", "/api/v1/marketplace/listings/{listing_id}"): Case(
        lambda w: (
            f"/api/v1/marketplace/listings/{w.listing_id}",
            {"json": {"unit_price_ucr": 1}},
        ),
        OWN,
        "user",
        200,
    ),
    ("POST", "/api/v1/marketplace/listings/{listing_id}/cancel"): Case(
        lambda w: (f"/api/v1/marketplace/listings/{w.listing_id}/cancel", {}), OWN, "user", 200
    ),
    ("POST", "/api/v1/marketplace/listings/{listing_id}/buy"): Case(
        lambda w: (
            f"/api/v1/marketplace/listings/{w.other_listing_id}/buy",
            idem("mb", json={"quantity": 10_000, "buyer_id": w.a}),
        ),
        OWN,
        "user",
        201,
    ),
    ("GET", "/api/v1/marketplace/pricing-suggestion"): Case(
        lambda w: (
            "/api/v1/marketplace/pricing-suggestion",
            {"params": {"resource_id": w.resource_id}},
        ),
        OWN,
        "user",
        200,
    ),
    ("POST", "/api/v1/resources/{resource_id}/market-part"): Case(
        lambda w: (
            f"/api/v1/resources/{w.resource_id}/market-part",
            idem("mp", json={"amount_uusd": 100_000}),
        ),
        OWN,
        "user",
        200,
    ),
    ("GET", "/api/v1/users/{user_id}/orders"): Case(
        lambda w: (f"/api/v1/users/{w.a}/orders", {}), OWN, "user", 200
    ),
    ("GET", "/api/v1/marketplace/orders/{order_id}"): Case(
        lambda w: (f"/api/v1/marketplace/orders/{w.order_id}", {}), OWN, "user", 200
    ),
    ("GET", "/api/v1/users/{user_id}/allocations"): Case(
        lambda w: (f"/api/v1/users/{w.a}/allocations", {}), OWN, "user", 200
    ),
    ("GET", "/api/v1/marketplace/allocations/{allocation_id}"): Case(
        lambda w: (f"/api/v1/marketplace/allocations/{w.allocation_id}", {}), OWN, "user", 200
    ),
    ("POST", "/api/v1/marketplace/allocations/{allocation_id}/disputes"): Case(
        lambda w: (
            f"/api/v1/marketplace/allocations/{w.allocation_id}/disputes",
            {"json": {"reason": "timeouts"}},
        ),
        OWN,
        "user",
        201,
    ),
    ("GET", "/api/v1/users/{user_id}/disputes"): Case(
        lambda w: (f"/api/v1/users/{w.a}/disputes", {}), OWN, "user", 200
    ),
    ("GET", "/api/v1/admin/marketplace"): Case(
        lambda w: ("/api/v1/admin/marketplace", {}), ADMIN_ONLY, "admin", 200
    ),
    ("GET", "/api/v1/admin/marketplace/disputes"): Case(
        lambda w: ("/api/v1/admin/marketplace/disputes", {}), ADMIN_ONLY, "admin", 200
    ),
    ("POST", "/api/v1/admin/marketplace/disputes/{dispute_id}/resolve"): Case(
        lambda w: (
            f"/api/v1/admin/marketplace/disputes/{w.dispute_id}/resolve",
            idem("res", json={"action": "refund", "reason": "upstream down"}),
        ),
        ADMIN_ONLY,
        "admin",
        200,
    ),
    # --- exports: a user key exports its own rows; naming A is a 404 for B
    ("GET", "/api/v1/exports/{kind}.csv"): Case(
        lambda w: ("/api/v1/exports/transfers.csv", {"params": {"user_id": w.a}}), OWN, "user", 200
    ),
}


def test_route_table_has_no_stale_entries() -> None:
    assert sorted(set(TABLE) - set(ROUTES)) == []


def test_every_route_is_in_the_table() -> None:
    assert len(ROUTES) >= 22
    missing = [f"{m} {p}" for m, p in ROUTES if (m, p) not in TABLE]
    assert missing == [], f"routes missing from the isolation TABLE: {missing}"


def _a_view(api: Api, w: World) -> Any:
    """What A owns, as the admin sees it: user, wallet, earnings, the model."""
    c, h = api.client, api.admin
    return (
        c.get(f"/api/v1/users/{w.a}", headers=h).json(),
        c.get(f"/api/v1/users/{w.a}/wallet", headers=h).json(),
        c.get(f"/api/v1/users/{w.a}/earnings", headers=h).json(),
        c.get(f"/api/v1/models/{w.model_id}", headers=h).json(),
    )


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_isolation(api: Api, method: str, path: str) -> None:
    case = TABLE.get((method, path))
    assert case is not None, (
        f"{method} {path} is not in the isolation TABLE: say how to call it on user A's"
        " resources and what another user's key must get"
    )
    w = world(api)
    url, kwargs = case.request(w)
    extra = kwargs.pop("headers", {})
    before = api.ledger_state()
    view = _a_view(api, w)

    if case.keyless is not None:
        status, code = case.keyless
        for who in ({}, {"Authorization": "Bearer mb_u_forged"}, w.b_headers, api.admin):
            r = api.client.request(method, url, headers={**extra, **who}, **kwargs)
            problem(r, status, code)
        assert api.ledger_state() == before, "a refused call moved credits"
        assert _a_view(api, w) == view, "a refused call changed A's resources"
        return

    anonymous = api.client.request(method, url, headers=extra, **kwargs)
    problem(anonymous, 401, "unauthenticated")
    wrong = api.client.request(
        method, url, headers={**extra, "Authorization": "Bearer mb_u_forged"}, **kwargs
    )
    problem(wrong, 401, "unauthenticated")

    other = api.client.request(method, url, headers={**w.b_headers, **extra}, **kwargs)
    if case.as_other == OWN:
        body = problem(other, 404)
        assert body["code"].endswith("not_found")
        # the same answer as for a user (purchase, hold) that does not exist: it names the id
        named = {
            "purchase_not_found": w.purchase_id,
            "hold_not_found": w.hold_id,
            "payout_not_found": w.payout_id,
            "usage_not_found": w.usage_id,
            "stake_listing_not_found": 999_999,
            "resource_not_found": w.resource_id,
            "market_listing_not_found": w.listing_id,
            "market_order_not_found": w.order_id,
            "allocation_not_found": w.allocation_id,
            "subscription_not_found": w.subscription_id,
        }
        assert str(named.get(body["code"], w.a)) in body["detail"]
    elif case.as_other == ADMIN_ONLY:
        problem(other, 403, "forbidden")
    else:
        assert other.status_code == case.as_other, other.text
        items = other.json().get("items", [other.json()])
        leaked = [m for m in items if m.get("purchased") or m.get("owned")]
        assert not leaked, "A's flags leaked to B"
    assert api.ledger_state() == before, "a refused call moved credits"
    assert _a_view(api, w) == view, "a refused call changed A's resources"

    # The same call by its rightful caller works: the refusals above were about who asked.
    if case.owner_status is not None:
        headers = w.a_headers if case.owner == "user" else api.admin
        mine = api.client.request(method, url, headers={**headers, **extra}, **kwargs)
        assert mine.status_code == case.owner_status, mine.text


def test_user_key_sees_not_found_for_missing_and_foreign_users_alike(api: Api) -> None:
    w = world(api)
    foreign = api.client.get(f"/api/v1/users/{w.a}/wallet", headers=w.b_headers)
    missing = api.client.get("/api/v1/users/999999/wallet", headers=w.b_headers)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["code"] == missing.json()["code"] == "user_not_found"
    assert foreign.json().keys() == missing.json().keys()
