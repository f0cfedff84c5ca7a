"""The seed story end to end over HTTP, on both backends."""

from __future__ import annotations

from tests.api.conftest import Api


def test_creator_earns_per_token_from_others_not_from_self(api: Api) -> None:
    alice, alice_h = api.user("alice", credits_ucr=100_000_000)
    bob, bob_h = api.user("bob", credits_ucr=100_000_000)
    rule = {"per_token_ucr": 10_000, "share_bps": 0, "popularity_tiers": [], "type_multipliers": {}}
    model = api.model("bob-bot", creator_id=bob, earnings_rule=rule)

    r = api.client.post(
        "/api/v1/usage",
        json={"user_id": alice, "model": "bob-bot", "input_tokens": 1000, "output_tokens": 500},
        headers={**alice_h, "Idempotency-Key": "a1"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    # 1000 × 1 µcr/1k… : 1,000,000 µcr per 1M input, 2,000,000 per 1M output
    assert body["charge_ucr"] == 1000 * 1 + 500 * 2
    assert body["earnings"] == [{"user_id": bob, "amount_ucr": 1500 * 10_000}]
    assert body["balance_ucr"] == 100_000_000 - 2000
    assert r.headers["Idempotency-Hit"] == "false"

    again = api.client.post(
        "/api/v1/usage",
        json={"user_id": alice, "model": "bob-bot", "input_tokens": 1000, "output_tokens": 500},
        headers={**alice_h, "Idempotency-Key": "a1"},
    )
    assert again.status_code == 201
    assert again.json() == body
    assert again.headers["Idempotency-Hit"] == "true"

    own = api.client.post(
        "/api/v1/usage",
        json={"user_id": bob, "model": model["id"], "input_tokens": 1000, "output_tokens": 500},
        headers={**bob_h, "Idempotency-Key": "b1"},
    )
    assert own.status_code == 201, own.text
    assert own.json()["earnings"] == []

    earned = api.client.get(f"/api/v1/users/{bob}/earnings", headers=bob_h).json()
    assert earned["total_ucr"] == 15_000_000
    assert earned["total_tokens"] == 1500
    assert earned["models"][0]["model_id"] == model["id"]
    wallet = api.client.get(f"/api/v1/users/{bob}/wallet", headers=bob_h).json()
    assert wallet["balance_ucr"] == 100_000_000 - 2000
    assert wallet["earnings_ucr"] == 15_000_000

    # Alice cannot see Bob's wallet: 404, as if it did not exist.
    hidden = api.client.get(f"/api/v1/users/{bob}/wallet", headers=alice_h)
    assert hidden.status_code == 404
    assert hidden.headers["content-type"] == "application/problem+json"
