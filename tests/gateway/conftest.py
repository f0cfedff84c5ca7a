"""Gateway fixtures: a fake upstream and modelbank itself, each served by uvicorn on a free
port in a thread, so the official ``openai`` SDK talks real HTTP to both (DESIGN §9)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import openai
import pytest
from sqlalchemy import func, select

from modelbank.api import create_app
from modelbank.auth import service as auth
from modelbank.config import load_settings
from modelbank.demo_gateway.servers import serving as demo_serving
from modelbank.gateway.fake_upstream import FakeUpstream, FakeUpstreamConfig
from modelbank.gateway.fake_upstream import create_app as create_fake
from modelbank.ledger.codes import AccountCode
from modelbank.ledger.models import accounts_table
from modelbank.ledger.service import user_account_ids
from tests.api.conftest import TEST_SECRET_KEY, bearer
from tests.conftest import Db

UPSTREAM_KEY = "sk-upstream-secret-key-0123456789abcdef"
"""The provider key deposited as the pool resource: it must never show up anywhere."""
SECOND_KEY = "sk-second-upstream-key-fedcba9876543210"


def serving(app: Any, *, lifespan: Literal["on", "off"] = "on") -> ContextManager[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yield its base URL
    (the demo's server helper, :func:`modelbank.demo_gateway.servers.serving`)."""
    return demo_serving(app, "test", lifespan=lifespan)


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[tuple[str, FakeUpstream]]:
    app = create_fake(FakeUpstreamConfig(api_keys=(UPSTREAM_KEY,)))
    with serving(app, lifespan="off") as url:
        yield url, app


@pytest.fixture(scope="module")
def second_server() -> Iterator[tuple[str, FakeUpstream]]:
    app = create_fake(FakeUpstreamConfig(api_keys=(SECOND_KEY,)))
    with serving(app, lifespan="off") as url:
        yield url, app


@pytest.fixture
def second(second_server: tuple[str, FakeUpstream]) -> tuple[str, FakeUpstream]:
    """A second fake upstream (its own key), for failover."""
    url, app = second_server
    app.config = FakeUpstreamConfig(api_keys=(SECOND_KEY,))
    httpx.post(f"{url}/_fake/reset").raise_for_status()
    return url, app


@pytest.fixture
def upstream(upstream_server: tuple[str, FakeUpstream]) -> tuple[str, FakeUpstream]:
    url, app = upstream_server
    app.config = FakeUpstreamConfig(api_keys=(UPSTREAM_KEY,))
    httpx.post(f"{url}/_fake/reset").raise_for_status()
    return url, app


@dataclass
class Gw:
    """modelbank served on ``url`` over the test database, with an admin key."""

    url: str
    db: Db
    admin: dict[str, str]
    http: httpx.Client
    clients: list[openai.OpenAI] = field(default_factory=list)

    def post(self, path: str, body: Any, *, key: str | None = None) -> Any:
        headers = dict(self.admin)
        if key is not None:
            headers["Idempotency-Key"] = key
        r = self.http.post(f"{self.url}{path}", json=body, headers=headers)
        assert r.status_code in (200, 201), r.text
        return r.json()

    def user(self, name: str, credits_ucr: int = 0) -> tuple[int, str]:
        """A user with ``credits_ucr`` purchased credits; (id, its API key)."""
        user_id = int(self.post("/api/v1/users", {"external_id": name})["id"])
        secret = self.post(f"/api/v1/users/{user_id}/keys", {})["key"]
        if credits_ucr:
            self.post(
                f"/api/v1/users/{user_id}/grants",
                {"amount_ucr": credits_ucr, "source": "purchased"},
                key=f"seed-{name}",
            )
        return user_id, secret

    def model(self, slug: str, **fields: Any) -> dict[str, Any]:
        """A chat model at 1 credit per 1M input tokens and 2 per 1M output (µcr rates)."""
        body = {
            "slug": slug,
            "name": slug,
            "price": {"input_ucr_per_mtok": 1_000_000, "output_ucr_per_mtok": 2_000_000},
            **fields,
        }
        return dict(self.post("/api/v1/models", body))

    def resource(self, base_url: str, models: dict[str, str], **fields: Any) -> dict[str, Any]:
        """A platform resource serving ``models`` (catalog slug → upstream name)."""
        body = {
            "provider": "fake",
            "base_url": f"{base_url}/v1",
            "api_key": fields.pop("api_key", UPSTREAM_KEY),
            "models": [{"model": m, "upstream_model": u} for m, u in models.items()],
            "quota_uusd": fields.pop("quota_uusd", 100_000_000),
            **fields,
        }
        return dict(self.post("/api/v1/admin/resources", body, key=f"res-{time.monotonic_ns()}"))

    def client(self, secret: str, **kwargs: Any) -> openai.OpenAI:
        """An ``openai`` client for ``secret`` (closed with the fixture)."""
        made = openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=secret, max_retries=0, timeout=20, **kwargs
        )
        self.clients.append(made)
        return made

    def wallet(self, user_id: int) -> tuple[int, int]:
        """(posted balance, pending debits) of the user's wallet, µcr."""
        with self.db.tx() as session:
            wallet = user_account_ids(session, [user_id], AccountCode.USER_WALLET)[user_id]
            row = session.execute(
                select(
                    accounts_table.c.credits_posted - accounts_table.c.debits_posted,
                    accounts_table.c.debits_pending,
                ).where(accounts_table.c.id == wallet)
            ).one()
        return int(row[0]), int(row[1])


def count(db: Db, table: Any) -> int:
    with db.tx() as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.fixture
def gw_settings() -> dict[str, Any]:
    """Settings overrides of the ``gw`` server (a test module may override this fixture)."""
    return {}


@pytest.fixture
def gw(db: Db, gw_settings: dict[str, Any]) -> Iterator[Gw]:
    defaults = {"router_cache_ttl_s": 0, "gateway_first_byte_timeout_s": 2}
    settings = load_settings(
        database_url=db.url, secret_key=TEST_SECRET_KEY, **{**defaults, **gw_settings}
    )
    app = create_app(settings, engine=db.engine)
    with db.tx() as session:
        admin = auth.create_key(session, auth.Role.ADMIN, name="test admin").secret
    with serving(app) as url, httpx.Client(timeout=20) as http:
        made = Gw(url, db, bearer(admin), http)
        yield made
        for client in made.clients:
            client.close()
