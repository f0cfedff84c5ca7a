"""The creator economy end to end over HTTP, on both backends (issue "Creator economy", DESIGN
§7): popularity tiers and type multipliers over 100+ uses, self-usage, models sorted by
earnings, a rule change mid-way, the monetisation switches, stake listings and their sale,
and, for every earning, why it is what it is (``GET /usage/{id}/earnings``)."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from tests.api.conftest import Api, problem

CREDIT = 1_000_000
PRICE = {"input_ucr_per_mtok": 1_000_000, "output_ucr_per_mtok": 2_000_000}
"""1 µcr per input token, 2 per output token."""
TIERED = {
    "per_use_ucr": 0,
    "per_token_ucr": "0.5",
    "share_bps": 0,
    "popularity_tiers": [[100, "1.2"], [1_000, "1.5"]],
    "type_multipliers": {"chat": "0.8", "image_generation": "1.0", "*": "0.6"},
}
"""Half a µcr per token, DESIGN §7 tiers up to 1,000 uses and its type multipliers."""


def explain(api: Api, usage_id: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = api.client.get(f"/api/v1/usage/{usage_id}/earnings", headers=headers or api.admin)
    assert r.status_code == 200, r.text
    return dict(r.json())


def charged(api: Api, user: int, model: int | str, key: str, **fields: Any) -> dict[str, Any]:
    r = api.charge(user, model, key=key, **fields)
    assert r.status_code == 201, r.text
    return dict(r.json())


def half_even(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


# ---------------------------------------------------------------- multipliers over 100+ uses


def test_popularity_tier_switches_after_the_hundredth_use(api: Api) -> None:
    creator, creator_h = api.user("creator")
    fan, _ = api.user("fan", credits_ucr=100 * CREDIT)
    model = api.model("tiered", creator_id=creator, earnings_rule=TIERED, price=PRICE)["id"]
    kinds = ["chat", "image_generation"]
    # Uses 1…100 in one batch: each sees 0…99 prior uses, below the ≥ 100 tier.
    batch = [
        {
            "idempotency_key": f"b{n}",
            "user_id": fan,
            "model": model,
            "usage_type": kinds[n % 2],
            "input_tokens": 1_000,
            "output_tokens": 1 + n,
        }
        for n in range(100)
    ]
    r = api.client.post("/api/v1/usage/batch", json={"events": batch}, headers=api.service)
    assert r.status_code == 200 and r.json()["charged"] == 100, r.text
    usage_ids = [int(x["usage_id"]) for x in r.json()["results"]]
    # Uses 101 and 102 (100 and 101 prior uses): the ≥ 100 tier, multiplier 1.2.
    for n in (100, 101):
        out = charged(
            api,
            fan,
            model,
            f"s{n}",
            usage_type=kinds[n % 2],
            input_tokens=1_000,
            output_tokens=1 + n,
        )
        usage_ids.append(int(out["usage_id"]))

    total = 0
    for n, usage_id in enumerate(usage_ids):
        why = explain(api, usage_id, creator_h)
        popularity = Decimal("1.2") if n >= 100 else Decimal(1)
        kind = Decimal("0.8") if kinds[n % 2] == "chat" else Decimal("1.0")
        tokens = 1_000 + 1 + n
        amount = half_even(tokens * Decimal("0.5") * popularity * kind)
        (line,) = why["lines"]
        assert Decimal(line["popularity_multiplier"]) == popularity, (n, line)
        assert Decimal(line["type_multiplier"]) == kind
        assert (line["user_id"], line["amount_ucr"], line["rule_version"]) == (creator, amount, 1)
        assert line["share_bps"] == 10_000 and why["earnings_note"] is None
        assert why["payer_id"] is None and why["burns"] is None  # the creator did not pay
        assert why["rule"]["popularity_tiers"] == [[100, "1.2"], [1_000, "1.5"]]
        total += amount
    # the switch exactly: use 100 (99 prior) at 1.0, use 101 (100 prior) at 1.2
    assert explain(api, usage_ids[99])["lines"][0]["popularity_multiplier"] == "1"
    assert explain(api, usage_ids[100])["lines"][0]["popularity_multiplier"] == "1.2"

    e = api.client.get(f"/api/v1/users/{creator}/earnings", headers=creator_h).json()
    assert e["total_ucr"] == total and e["total_uses"] == 102


def test_self_usage_is_charged_and_earns_nothing(api: Api) -> None:
    creator, creator_h = api.user("creator", credits_ucr=10 * CREDIT)
    model = api.model("own", creator_id=creator, earnings_rule=TIERED, price=PRICE)["id"]
    out = charged(api, creator, model, "self", headers=creator_h, input_tokens=5_000)
    assert out["charge_ucr"] == 5_000 and out["earnings"] == []
    why = explain(api, out["usage_id"], creator_h)
    assert (why["earnings_note"], why["lines"], why["earnings_ucr"]) == ("self_usage", [], 0)
    assert why["payer_id"] == creator and why["platform_kept_ucr"] == 5_000
    assert sum(b["amount_ucr"] for b in why["burns"]) == 5_000
    wallet = api.client.get(f"/api/v1/users/{creator}/wallet", headers=creator_h).json()
    assert (wallet["balance_ucr"], wallet["earnings_ucr"]) == (10 * CREDIT - 5_000, 0)


def test_models_sorted_by_what_they_earned(api: Api) -> None:
    creator, creator_h = api.user("creator")
    fan, _ = api.user("fan", credits_ucr=10 * CREDIT)
    flat = {"per_use_ucr": 1_000, "share_bps": 0, "popularity_tiers": [], "type_multipliers": {}}
    ids = {
        slug: api.model(slug, creator_id=creator, earnings_rule=flat)["id"]
        for slug in ("low", "high", "mid")
    }
    for slug, uses in (("low", 1), ("high", 3), ("mid", 2)):
        for n in range(uses):
            charged(api, fan, slug, f"{slug}{n}", input_tokens=10)
    e = api.client.get(f"/api/v1/users/{creator}/earnings", headers=creator_h).json()
    assert [(m["model_id"], m["uses"], m["earnings_ucr"]) for m in e["models"]] == [
        (ids["high"], 3, 3_000),
        (ids["mid"], 2, 2_000),
        (ids["low"], 1, 1_000),
    ]


# ---------------------------------------------------------------- rule versions


def test_rule_change_mid_way_is_recorded_per_earning(api: Api) -> None:
    creator, creator_h = api.user("creator")
    fan, fan_h = api.user("fan", credits_ucr=10 * CREDIT)
    model = api.model("versioned", creator_id=creator, earnings_rule=TIERED, price=PRICE)["id"]
    url = f"/api/v1/models/{model}/earnings-rule"
    first = charged(api, fan, model, "before", input_tokens=1_000)

    new_rule = {
        "per_use_ucr": 7_000,
        "share_bps": 0,
        "popularity_tiers": [],
        "type_multipliers": {},
    }
    assert api.client.put(url, json=new_rule, headers=creator_h).status_code == 403
    r = api.client.put(url, json=new_rule, headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.json()["current"]["version"] == 2
    assert [v["version"] for v in r.json()["versions"]] == [1, 2]
    problem(
        api.client.put(
            url, json={**new_rule, "effective_from": "2000-01-01T00:00:00Z"}, headers=api.admin
        ),
        422,
        "invalid_earnings_rule",
    )
    # a version scheduled for later is listed but not in force yet
    later = {**new_rule, "per_use_ucr": 9, "effective_from": "2999-01-01T00:00:00Z"}
    assert api.client.put(url, json=later, headers=api.admin).status_code == 200

    second = charged(api, fan, model, "after", input_tokens=1_000)
    old, new = explain(api, first["usage_id"], fan_h), explain(api, second["usage_id"], fan_h)
    assert old["lines"][0]["rule_version"] == 1 and old["lines"][0]["amount_ucr"] == 400
    assert new["lines"][0]["rule_version"] == 2 and new["lines"][0]["amount_ucr"] == 7_000
    assert new["rule"]["per_use_ucr"] == 7_000 and old["rule"]["per_token_ucr"] == "0.5"
    assert new["payer_id"] == fan and new["burns"]  # the payer sees their grants

    shown = api.client.get(url, headers=fan_h).json()
    assert shown["current"]["version"] == 2 and shown["current"]["per_use_ucr"] == 7_000
    assert [v["version"] for v in shown["versions"]] == [1, 2, 3]
    assert shown["versions"][2]["effective_from"].startswith("2999-01-01")


def test_a_model_without_a_rule_shows_the_default_version(api: Api) -> None:
    creator, creator_h = api.user("creator")
    model = api.model("plain", creator_id=creator)["id"]
    shown = api.client.get(f"/api/v1/models/{model}/earnings-rule", headers=creator_h).json()
    # models with a creator get a version on creation; a platform model has none
    platform = api.model("platform-only")["id"]
    bare = api.client.get(f"/api/v1/models/{platform}/earnings-rule", headers=creator_h).json()
    assert shown["current"]["version"] >= bare["current"]["version"] == 0
    assert bare["versions"] == [] and bare["current"]["effective_from"] is None
    assert bare["current"]["share_bps"] == 2_000  # DESIGN §7 default: 20% of the charge


# ---------------------------------------------------------------- monetisation


def test_monetisation_off_charges_but_earns_nothing(api: Api) -> None:
    creator, creator_h = api.user("creator")
    fan, fan_h = api.user("fan", credits_ucr=10 * CREDIT)
    model = api.model("switchable", creator_id=creator, earnings_rule=TIERED, price=PRICE)["id"]
    url = f"/api/v1/models/{model}/monetisation"

    assert api.client.get(url, headers=fan_h).json() == {
        "model_id": model,
        "enabled": True,
        "platform_enabled": True,
        "earning": True,
    }
    assert api.client.put(url, json={"enabled": False}, headers=creator_h).status_code == 403
    off = api.client.put(url, json={"enabled": False}, headers=api.admin)
    assert off.status_code == 200 and off.json()["earning"] is False, off.text
    out = charged(api, fan, model, "model-off", input_tokens=1_000)
    assert out["charge_ucr"] == 1_000 and out["earnings"] == []
    why = explain(api, out["usage_id"], fan_h)
    assert why["earnings_note"] == "monetisation_off" and why["lines"] == []

    assert api.client.put(url, json={"enabled": True}, headers=api.admin).status_code == 200
    platform = api.client.put(
        "/api/v1/admin/monetisation", json={"enabled": False}, headers=api.admin
    )
    assert platform.status_code == 200 and platform.json() == {"enabled": False}
    assert api.client.get("/api/v1/admin/monetisation", headers=api.admin).json() == {
        "enabled": False
    }
    assert api.client.get(url, headers=fan_h).json()["earning"] is False
    out = charged(api, fan, model, "platform-off", input_tokens=1_000)
    assert out["charge_ucr"] == 1_000 and out["earnings"] == []
    assert explain(api, out["usage_id"])["earnings_note"] == "monetisation_off_platform"

    api.client.put("/api/v1/admin/monetisation", json={"enabled": True}, headers=api.admin)
    out = charged(api, fan, model, "back-on", input_tokens=1_000)
    assert out["earnings"] == [{"user_id": creator, "amount_ucr": 400}]
    wallet = api.client.get(f"/api/v1/users/{fan}/wallet", headers=fan_h).json()
    assert wallet["balance_ucr"] == 10 * CREDIT - 3_000  # all three uses were charged
    e = api.client.get(f"/api/v1/users/{creator}/earnings", headers=creator_h).json()
    assert (e["total_ucr"], e["total_uses"]) == (400, 1)


# ---------------------------------------------------------------- stakes


def test_stake_purchase_splits_the_next_usage_exactly(api: Api) -> None:
    creator, creator_h = api.user("creator")
    buyer, buyer_h = api.user("buyer", credits_ucr=8 * CREDIT)
    rival, rival_h = api.user("rival", credits_ucr=8 * CREDIT)
    fan, _ = api.user("fan", credits_ucr=8 * CREDIT)
    odd = {"per_use_ucr": 1_001, "share_bps": 0, "popularity_tiers": [], "type_multipliers": {}}
    model = api.model("shared", creator_id=creator, earnings_rule=odd, price=PRICE)["id"]
    base = f"/api/v1/models/{model}/stakes"

    assert api.client.get(base, headers=buyer_h).json() == {
        "model_id": model,
        "stakes": [{"user_id": creator, "share_bps": 10_000, "listed_bps": 0}],
    }
    r = api.client.post(
        f"{base}/listings", json={"share_bps": 2_500, "price_ucr": 5 * CREDIT}, headers=creator_h
    )
    assert r.status_code == 201, r.text
    listing = r.json()
    assert (listing["status"], listing["seller_id"], listing["price"]) == (
        "open",
        creator,
        "5.000000 cr",
    )
    problem(
        api.client.post(
            f"{base}/listings", json={"share_bps": 7_501, "price_ucr": 1}, headers=creator_h
        ),
        422,
        "stake_unavailable",
    )
    problem(
        api.client.post(f"{base}/listings", json={"share_bps": 1, "price_ucr": 1}, headers=buyer_h),
        422,
        "stake_unavailable",
    )
    listed = api.client.get(f"{base}/listings", headers=rival_h).json()
    assert [x["id"] for x in listed["items"]] == [listing["id"]]
    buy = f"{base}/listings/{listing['id']}/buy"
    api.rejects(
        "POST", buy, 422, "own_stake_listing", headers={**creator_h, "Idempotency-Key": "o"}
    )

    r = api.client.post(buy, headers={**buyer_h, "Idempotency-Key": "buy-1"})
    assert r.status_code == 200 and r.headers["Idempotency-Hit"] == "false", r.text
    sale = r.json()
    assert (sale["listing"]["status"], sale["listing"]["buyer_id"]) == ("sold", buyer)
    assert sale["stakes"]["stakes"] == [
        {"user_id": creator, "share_bps": 7_500, "listed_bps": 0},
        {"user_id": buyer, "share_bps": 2_500, "listed_bps": 0},
    ]
    again = api.client.post(buy, headers={**buyer_h, "Idempotency-Key": "buy-1"})
    assert again.headers["Idempotency-Hit"] == "true" and again.json() == sale
    # bought twice: the second buyer gets 409 and nothing moves
    api.rejects(
        "POST", buy, 409, "stake_listing_state", headers={**rival_h, "Idempotency-Key": "buy-2"}
    )
    wallets = {
        u: api.client.get(f"/api/v1/users/{u}/wallet", headers=api.admin).json()["balance_ucr"]
        for u in (creator, buyer, rival)
    }
    assert wallets == {creator: 5 * CREDIT, buyer: 3 * CREDIT, rival: 8 * CREDIT}

    # The next use splits the pool of 1,001 µcr: ⌊1001 × 0.75⌋ = 750, ⌊1001 × 0.25⌋ = 250,
    # and the platform keeps the 1 µcr remainder.
    out = charged(api, fan, model, "after-sale", input_tokens=10)
    assert out["earnings"] == [
        {"user_id": creator, "amount_ucr": 750},
        {"user_id": buyer, "amount_ucr": 250},
    ]
    why = explain(api, out["usage_id"], buyer_h)
    assert [(x["user_id"], x["share_bps"], x["amount_ucr"]) for x in why["lines"]] == [
        (creator, 7_500, 750),
        (buyer, 2_500, 250),
    ]
    assert why["platform_kept_ucr"] == 10 - 1_000  # the charge (10) minus earnings (1,000)
    # a stakeholder using the model earns nothing from it; the other holders still do
    api.grant(buyer, CREDIT, key="top-up")
    own = charged(api, buyer, model, "holder-uses", headers=buyer_h, input_tokens=10)
    assert own["earnings"] == [{"user_id": creator, "amount_ucr": 750}]
    problem(api.client.get(f"/api/v1/usage/{out['usage_id']}/earnings", headers=rival_h), 404)


def test_stake_purchase_without_credits_is_402_and_writes_nothing(api: Api) -> None:
    creator, creator_h = api.user("creator")
    _poor, poor_h = api.user("poor", credits_ucr=CREDIT - 1)
    model = api.model("pricey", creator_id=creator)["id"]
    base = f"/api/v1/models/{model}/stakes/listings"
    listing = api.client.post(
        base, json={"share_bps": 100, "price_ucr": CREDIT}, headers=creator_h
    ).json()
    api.rejects(
        "POST",
        f"{base}/{listing['id']}/buy",
        402,
        "insufficient_funds",
        headers={**poor_h, "Idempotency-Key": "try"},
    )
    stakes = api.client.get(f"/api/v1/models/{model}/stakes", headers=poor_h).json()["stakes"]
    assert stakes == [{"user_id": creator, "share_bps": 10_000, "listed_bps": 100}]
    # the seller withdraws it; nobody else can
    cancel = f"{base}/{listing['id']}/cancel"
    problem(api.client.post(cancel, headers=poor_h), 404, "stake_listing_not_found")
    r = api.client.post(cancel, headers=creator_h)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    problem(api.client.post(cancel, headers=api.admin), 409, "stake_listing_state")


def test_admin_sets_stakes_and_service_keys_act_for_users(api: Api) -> None:
    creator, _ = api.user("creator")
    partner, partner_h = api.user("partner", credits_ucr=2 * CREDIT)
    model = api.model("joint", creator_id=creator)["id"]
    base = f"/api/v1/models/{model}/stakes"
    body = {
        "stakes": [
            {"user_id": creator, "share_bps": 6_000},
            {"user_id": partner, "share_bps": 4_000},
        ]
    }
    problem(api.client.post(base, json=body, headers=partner_h), 403, "forbidden")
    bad = {"stakes": [{"user_id": creator, "share_bps": 6_000}]}
    problem(api.client.post(base, json=bad, headers=api.admin), 422, "invalid_split")
    r = api.client.post(base, json=body, headers=api.admin)
    assert r.status_code == 200, r.text
    assert [(s["user_id"], s["share_bps"]) for s in r.json()["stakes"]] == [
        (creator, 6_000),
        (partner, 4_000),
    ]
    # a service key lists for the partner and buys for the creator
    problem(
        api.client.post(
            f"{base}/listings", json={"share_bps": 10, "price_ucr": 0}, headers=api.service
        ),
        422,
        "invalid_input",
    )
    listing = api.client.post(
        f"{base}/listings",
        json={"share_bps": 1_000, "price_ucr": 0, "seller_id": partner},
        headers=api.service,
    ).json()
    sold = api.client.post(
        f"{base}/listings/{listing['id']}/buy",
        json={"buyer_id": creator},
        headers={**api.service, "Idempotency-Key": "gift"},
    )
    assert sold.status_code == 200, sold.text
    assert sold.json()["listing"]["transfer_id"] is None  # a gift moves no credits
    assert [(s["user_id"], s["share_bps"]) for s in sold.json()["stakes"]["stakes"]] == [
        (creator, 7_000),
        (partner, 3_000),
    ]
