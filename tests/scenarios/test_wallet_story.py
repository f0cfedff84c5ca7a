"""The wallets issue's "done when" story, through HTTP on both backends (DESIGN §5, §12):

an operator registers a webhook endpoint (a real HTTP receiver on 127.0.0.1); a user buys a
package with the manual provider, gets a bonus, spends (bonus burned first), is refunded for
one usage and crosses the low-balance threshold; the jobs deliver ``purchase.completed``,
``usage.refunded`` and ``wallet.low_balance``, each verified by the receiver with the
endpoint's Standard Webhooks secret; every balance reconciles and ``modelbank verify`` exits 0.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from typer.testing import CliRunner

from modelbank import jobs
from modelbank.api import create_app
from modelbank.auth import service as auth
from modelbank.cli import app as cli
from modelbank.config import load_settings
from modelbank.secrets import SecretBox
from tests.api.conftest import TEST_SECRET_KEY, Api, bearer
from tests.conftest import Db
from tests.webhooks.conftest import Receiver

V1 = "/api/v1"
CR = 1_000_000
"""µcr in one credit."""


@pytest.fixture
def story_api(db: Db) -> Iterator[Api]:
    """The app on ``db`` with a known secret key (webhook secrets at rest)."""
    app = create_app(
        load_settings(database_url=db.url, secret_key=TEST_SECRET_KEY), engine=db.engine
    )
    with db.tx() as session:
        admin = auth.create_key(session, auth.Role.ADMIN, name="operator").secret
        service = auth.create_key(session, auth.Role.SERVICE, name="backend").secret
    with TestClient(app, raise_server_exceptions=True) as client:
        yield Api(client, db, bearer(admin), bearer(service))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP server on a free port of 127.0.0.1 (in a thread) that verifies each
    delivery with ``standardwebhooks.Webhook(secret).verify(body, headers)``."""
    state: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            status = state[0].handle({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.append(Receiver(url=f"http://127.0.0.1:{server.server_port}/modelbank"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state[0]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()


def test_wallet_story(story_api: Api, receiver: Receiver) -> None:
    api, c, admin = story_api, story_api.client, story_api.admin

    # The operator registers its endpoint; the signing secret is shown once.
    hook = ok(
        c.post(
            f"{V1}/admin/webhooks",
            json={
                "url": receiver.url,
                "events": ["purchase.*", "usage.refunded", "wallet.low_balance"],
                "description": "operator backend",
            },
            headers=admin,
        ),
        201,
    )
    secret = hook["secret"]
    assert secret.startswith("whsec_")
    assert secret not in c.get(f"{V1}/admin/webhooks/{hook['id']}", headers=admin).text
    receiver.secret = secret

    alice, alice_key = api.user("alice")
    carol, _ = api.user("carol")
    model = api.model(
        "story-model",
        creator_id=carol,
        price={"per_unit_ucr": CR},
        earnings_rule={"share_bps": 2_000, "popularity_tiers": [], "type_multipliers": {"chat": 1}},
    )

    def use(credits: int, key: str) -> int:
        r = api.charge(alice, "story-model", key=key, units=credits, usage_type="chat")
        assert ok(r, 201)["charge_ucr"] == credits * CR
        assert r.json()["earnings"] == [{"user_id": carol, "amount_ucr": credits * CR // 5}]
        return int(r.json()["usage_id"])

    def wallet(user_id: int) -> dict[str, Any]:
        return dict(ok(c.get(f"{V1}/users/{user_id}/wallet", headers=admin)))

    def grants(user_id: int) -> dict[str, dict[str, Any]]:
        items = ok(c.get(f"{V1}/users/{user_id}/grants", headers=admin))["items"]
        return {g["source"]: g for g in items}

    # 1. Alice buys Popular (200 cr, $17.99) with the manual provider; the admin confirms.
    packages = ok(c.get(f"{V1}/packages", headers=alice_key))["items"]
    popular = next(p for p in packages if p["slug"] == "popular")
    assert popular["highlighted"] is True
    purchase = ok(
        c.post(
            f"{V1}/users/{alice}/purchases",
            json={"package_id": popular["id"], "provider": "manual"},
            headers=alice_key,
        ),
        201,
    )
    assert purchase["status"] == "pending" and wallet(alice)["balance_ucr"] == 0
    confirmed = ok(
        c.post(
            f"{V1}/admin/purchases/{purchase['id']}/confirm",
            headers={**admin, "Idempotency-Key": "confirm-alice-1"},
        )
    )
    assert confirmed["status"] == "completed"
    assert wallet(alice)["balance_ucr"] == 200 * CR

    # 2. A bonus of 10 credits.
    api.grant(alice, 10 * CR, key="welcome-bonus", source="bonus")
    assert wallet(alice)["balance_ucr"] == 210 * CR

    # 3. She spends: the bonus burns first, then the purchase.
    first = use(15, "chat-1")
    g = grants(alice)
    assert (g["bonus"]["remaining_ucr"], g["purchased"]["remaining_ucr"]) == (0, 195 * CR)
    use(40, "chat-2")
    g = grants(alice)
    assert (g["bonus"]["remaining_ucr"], g["purchased"]["remaining_ucr"]) == (0, 155 * CR)
    assert wallet(carol)["earnings_ucr"] == 11 * CR

    # 4. The first usage is refunded: the credits go back to the grants they came from,
    #    carol gives back what she earned from it.
    refund = ok(
        c.post(
            f"{V1}/usage/{first}/refund",
            json={"reason": "model timed out"},
            headers={**admin, "Idempotency-Key": "refund-chat-1"},
        ),
        201,
    )
    assert refund["amount_ucr"] == 15 * CR and refund["earnings_reversed_ucr"] == 3 * CR
    g = grants(alice)
    assert (g["bonus"]["remaining_ucr"], g["purchased"]["remaining_ucr"]) == (10 * CR, 160 * CR)
    assert wallet(alice)["balance_ucr"] == 170 * CR
    assert wallet(carol)["earnings_ucr"] == 8 * CR

    # 5. She sets a 30-credit threshold, then spends down to 20: one low-balance event.
    ok(c.put(f"{V1}/users/{alice}/low-balance", json={"threshold_ucr": 30 * CR}, headers=alice_key))
    use(150, "chat-3")
    assert wallet(alice)["available_ucr"] == 20 * CR
    g = grants(alice)
    assert (g["bonus"]["remaining_ucr"], g["purchased"]["remaining_ucr"]) == (0, 20 * CR)
    alert = ok(c.get(f"{V1}/users/{alice}/low-balance", headers=alice_key))
    assert alert["alerted"] is True
    assert receiver.received == [], "nothing is sent before the jobs run"

    # 6. The jobs deliver the outbox to the receiver, signed.
    with httpx.Client(trust_env=False) as http:
        report = jobs.run_once(api.db.factory, box=SecretBox(TEST_SECRET_KEY), client=http)
        assert report.webhooks_delivered == 3 and report.webhook_attempts_failed == 0
        again = jobs.run_once(api.db.factory, box=SecretBox(TEST_SECRET_KEY), client=http)
        assert again.webhooks_delivered == 0
    assert len(receiver.received) == 3
    for got in receiver.received:
        assert got.verified, f"signature did not verify: {got.headers}"
        # the receiver's own check, repeated here: the secret shown at creation verifies it
        assert Webhook(secret).verify(got.body, got.headers) == got.payload
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 32).verify(got.body, got.headers)
    by_type = {got.payload["type"]: got.payload["data"] for got in receiver.received}
    assert by_type.keys() == {"purchase.completed", "usage.refunded", "wallet.low_balance"}
    assert by_type["purchase.completed"] == {
        "purchase_id": purchase["id"],
        "user_id": alice,
        "package_id": popular["id"],
        "provider": "manual",
        "status": "completed",
        "credits_ucr": 200 * CR,
        "price_uusd": 17_990_000,
        "refunded_ucr": 0,
        "origin": "checkout",
    }
    assert by_type["usage.refunded"] == {
        "refund_id": refund["id"],
        "usage_id": first,
        "user_id": alice,
        "model_id": model["id"],
        "amount_ucr": 15 * CR,
        "refunded_total_ucr": 15 * CR,
        "charge_ucr": 15 * CR,
        "earnings_reversed_ucr": 3 * CR,
    }
    assert by_type["wallet.low_balance"] == {
        "user_id": alice,
        "available_ucr": 20 * CR,
        "available": "20.000000 cr",
        "threshold_ucr": 30 * CR,
        "threshold": "30.000000 cr",
    }
    log = ok(c.get(f"{V1}/admin/webhooks/{hook['id']}/deliveries", headers=admin))["items"]
    assert sorted(d["status"] for d in log) == ["delivered"] * 3
    assert {d["message_id"] for d in log} == {
        got.headers["webhook-id"] for got in receiver.received
    }

    # 7. Everything reconciles: wallets = Σ grants left; revenue recognised on purchased
    #    credits only; the ledger invariants (checked again by the db fixture) and the CLI.
    for user_id in (alice, carol):
        left = sum(g["remaining_ucr"] for g in grants(user_id).values())
        assert wallet(user_id)["balance_ucr"] == left
    assert wallet(carol)["earnings_ucr"] == 38 * CR  # 20% of 40 + 150
    stats = ok(c.get(f"{V1}/admin/stats", headers=admin))
    recognition = stats["revenue_recognition"]
    assert recognition["by_source_ucr"] == {"bonus": 10 * CR, "purchased": 180 * CR}
    assert recognition["purchased_basis_uusd"] == 16_191_000  # 180 of 200 cr bought for $17.99
    assert stats["usage_refunded_ucr"] == 15 * CR
    assert api.db.violations() == []
    result = CliRunner().invoke(cli, ["verify", "--db", api.db.url])
    assert result.exit_code == 0, result.stderr
