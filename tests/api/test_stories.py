"""The seed stories end to end over HTTP, on both backends: creators earn 0.01 credit
(10,000 µcr) per token others use on their models, nothing from their own use, and see
their models' earnings highest first."""

from __future__ import annotations

from tests.api.conftest import Api

PER_TOKEN_UCR = 10_000
"""DESIGN §7 example: 0.01 credit per token."""
FLAT_PER_TOKEN = {
    "per_token_ucr": PER_TOKEN_UCR,
    "share_bps": 0,
    "popularity_tiers": [],
    "type_multipliers": {},
}
# 1 µcr per input token, 2 per output token (the `api.model` default price)
PRICE = {"input_ucr_per_mtok": 1_000_000, "output_ucr_per_mtok": 2_000_000}


def use(api: Api, user: int, headers: dict[str, str], model: str, key: str, i: int, o: int) -> dict:
    r = api.client.post(
        "/api/v1/usage",
        json={"user_id": user, "model": model, "input_tokens": i, "output_tokens": o},
        headers={**headers, "Idempotency-Key": key},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_creator_earns_a_hundredth_credit_per_token_of_others(api: Api) -> None:
    start = 500_000_000
    creator, creator_h = api.user("creator", credits_ucr=start)
    fan, fan_h = api.user("fan", credits_ucr=start)
    other, other_h = api.user("other", credits_ucr=start)
    api.model("creator-bot", creator_id=creator, earnings_rule=FLAT_PER_TOKEN, price=PRICE)

    calls = [(fan, fan_h, 120, 30), (other, other_h, 7, 0), (fan, fan_h, 0, 1)]
    earned = 0
    for n, (user, headers, i, o) in enumerate(calls):
        out = use(api, user, headers, "creator-bot", f"k{n}", i, o)
        assert out["charge_ucr"] == i + 2 * o
        assert out["earnings"] == [{"user_id": creator, "amount_ucr": (i + o) * PER_TOKEN_UCR}]
        earned += (i + o) * PER_TOKEN_UCR
    assert earned == 158 * 10_000

    # Self-usage: charged like anyone, earns nothing.
    own = use(api, creator, creator_h, "creator-bot", "self", 1000, 1000)
    assert own["charge_ucr"] == 3000 and own["earnings"] == []

    wallet = api.client.get(f"/api/v1/users/{creator}/wallet", headers=creator_h).json()
    assert wallet["balance_ucr"] == start - 3000
    assert wallet["earnings_ucr"] == earned and wallet["earnings"] == "1.580000 cr"
    fan_wallet = api.client.get(f"/api/v1/users/{fan}/wallet", headers=fan_h).json()
    assert fan_wallet["balance_ucr"] == start - (120 + 60) - 2 and fan_wallet["earnings_ucr"] == 0

    e = api.client.get(f"/api/v1/users/{creator}/earnings", headers=creator_h).json()
    assert e["total_ucr"] == earned and e["total"] == "1.580000 cr"
    assert e["total_tokens"] == 158 and e["total_uses"] == 3  # the self-use is not a paid use
    stats = api.client.get("/api/v1/admin/stats", headers=api.admin).json()
    assert stats["creator_earnings_ucr"] == earned and stats["earnings_owed_ucr"] == earned
    assert stats["usage_revenue_ucr"] == (150 + 30) + 7 + 2 + 3000


def test_three_models_earnings_sorted_highest_first(api: Api) -> None:
    creator, creator_h = api.user("creator")
    fan, fan_h = api.user("fan", credits_ucr=100_000_000)
    ids = {}
    for slug in ("small-earner", "big-earner", "mid-earner"):
        ids[slug] = api.model(slug, creator_id=creator, earnings_rule=FLAT_PER_TOKEN)["id"]
    tokens = {"small-earner": [5], "big-earner": [100, 200], "mid-earner": [40, 1, 9]}
    for slug, uses in tokens.items():
        for n, t in enumerate(uses):
            use(api, fan, fan_h, slug, f"{slug}-{n}", t, 0)
    # the creator's own use of the small model adds nothing
    api.grant(creator, 1_000_000, key="c")
    use(api, creator, creator_h, "small-earner", "self", 10_000, 0)

    r = api.client.get(f"/api/v1/users/{creator}/earnings", headers=creator_h)
    assert r.status_code == 200, r.text
    e = r.json()
    lines = [
        (m["model_id"], m["name"], m["uses"], m["tokens"], m["earnings_ucr"]) for m in e["models"]
    ]
    assert lines == [
        (ids["big-earner"], "big-earner", 2, 300, 300 * PER_TOKEN_UCR),
        (ids["mid-earner"], "mid-earner", 3, 50, 50 * PER_TOKEN_UCR),
        (ids["small-earner"], "small-earner", 1, 5, 5 * PER_TOKEN_UCR),
    ]
    assert [m["earnings"] for m in e["models"]] == ["3.000000 cr", "0.500000 cr", "0.050000 cr"]
    assert e["total_ucr"] == 355 * PER_TOKEN_UCR and e["total_uses"] == 6
    assert all(m["last_used_at"] for m in e["models"])
    # The fan earned nothing and sees an empty list; the creator's earnings stay private.
    assert api.client.get(f"/api/v1/users/{fan}/earnings", headers=fan_h).json()["models"] == []
    hidden = api.client.get(f"/api/v1/users/{creator}/earnings", headers=fan_h)
    assert hidden.status_code == 404
