"""HTTP fixtures: the app on the test database (SQLite and PostgreSQL), an admin key, and
helpers to make users and read the ledger's state."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from modelbank.api import create_app
from modelbank.auth import service as auth
from modelbank.config import load_settings
from modelbank.ledger.models import accounts_table, transfers_table
from modelbank.metering.models import usage_events_table
from tests.conftest import Db

TEST_SECRET_KEY = "vD1nQb8bYQ0YyXh5rE7S0u3yV8pQ9b3w2mJ8kZ4dX1A="
"""A fixed Fernet key: the app encrypts webhook secrets with it (no key file is written)."""


@dataclass
class Api:
    """A TestClient on the app plus what tests need around it."""

    client: TestClient
    db: Db
    admin: dict[str, str]
    service: dict[str, str]

    def user(self, external_id: str, *, credits_ucr: int = 0) -> tuple[int, dict[str, str]]:
        """Create a user (admin), optionally grant purchased credits; return (id, headers
        of a user key)."""
        r = self.client.post("/api/v1/users", json={"external_id": external_id}, headers=self.admin)
        assert r.status_code == 201, r.text
        user_id = int(r.json()["id"])
        r = self.client.post(f"/api/v1/users/{user_id}/keys", json={}, headers=self.admin)
        assert r.status_code == 201, r.text
        if credits_ucr:
            self.grant(user_id, credits_ucr, key=f"seed-{external_id}")
        return user_id, bearer(r.json()["key"])

    def grant(self, user_id: int, amount_ucr: int, *, key: str, source: str = "purchased") -> Any:
        r = self.client.post(
            f"/api/v1/users/{user_id}/grants",
            json={"amount_ucr": amount_ucr, "source": source},
            headers={**self.admin, "Idempotency-Key": key},
        )
        assert r.status_code == 201, r.text
        return r.json()

    def model(self, slug: str, **fields: Any) -> dict[str, Any]:
        """Create a model (admin) with an explicit price unless one is given."""
        body = {
            "slug": slug,
            "name": slug,
            "price": {"input_ucr_per_mtok": 1_000_000, "output_ucr_per_mtok": 2_000_000},
            **fields,
        }
        r = self.client.post("/api/v1/models", json=body, headers=self.admin)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def ledger_state(self) -> tuple[Any, ...]:
        """Everything a rejected request must leave unchanged: every account's totals, the
        number of transfers and of usage rows."""
        with self.db.tx() as session:
            accounts = tuple(
                tuple(row)
                for row in session.execute(
                    select(
                        accounts_table.c.id,
                        accounts_table.c.debits_posted,
                        accounts_table.c.credits_posted,
                        accounts_table.c.debits_pending,
                        accounts_table.c.credits_pending,
                    ).order_by(accounts_table.c.id)
                )
            )
            transfers = session.execute(select(func.count()).select_from(transfers_table)).scalar()
            usage = session.execute(select(func.count()).select_from(usage_events_table)).scalar()
        return accounts, transfers, usage

    def charge(
        self,
        user_id: int,
        model: int | str,
        *,
        key: str,
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> Any:
        """POST /api/v1/usage (service key unless ``headers``); returns the response."""
        return self.client.post(
            "/api/v1/usage",
            json={"user_id": user_id, "model": model, **fields},
            headers={**(headers or self.service), "Idempotency-Key": key},
        )

    def rejects(
        self, method: str, url: str, status: int, code: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Send a request that must be refused with ``status`` (and ``code``) as problem+json
        and leave the ledger exactly as it was; return the problem body."""
        before = self.ledger_state()
        r = self.client.request(method, url, **kwargs)
        body = problem(r, status, code)
        assert self.ledger_state() == before, f"{method} {url} changed the ledger"
        return body


PROBLEM_JSON = "application/problem+json"


def problem(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert ``r`` is an RFC 9457 problem with ``status`` (and ``code``); return its body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM_JSON, r.headers["content-type"]
    body = dict(r.json())
    assert {"type", "title", "status", "detail", "code"} <= body.keys(), body
    assert body["status"] == status
    assert body["type"] == f"urn:modelbank:problem:{body['code']}"
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["code"] == code, body
    return body


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def api(db: Db) -> Iterator[Api]:
    """The app on ``db`` with an admin and a service key."""
    app = create_app(
        load_settings(database_url=db.url, secret_key=TEST_SECRET_KEY), engine=db.engine
    )
    with db.tx() as session:
        admin = auth.create_key(session, auth.Role.ADMIN, name="test admin").secret
        service = auth.create_key(session, auth.Role.SERVICE, name="test service").secret
    with TestClient(app, raise_server_exceptions=True) as client:
        yield Api(client, db, bearer(admin), bearer(service))
