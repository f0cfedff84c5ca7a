"""Schemathesis against the app's own /openapi.json, on SQLite and PostgreSQL (a few hundred
cases each).

Checks: no 5xx (``not_a_server_error``), bodies that match the documented schema
(``response_schema_conformance``), only documented status codes (``status_code_conformance``)
and content types (``content_type_conformance``: errors are ``application/problem+json``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import text
from sqlalchemy.orm import Session

from modelbank.api import create_app
from modelbank.auth import service as auth
from modelbank.config import load_settings
from modelbank.db.engine import make_engine
from modelbank.db.models import metadata
from modelbank.ledger import invariants
from modelbank.ledger import service as ledger
from tests.api.conftest import PROBLEM_JSON
from tests.conftest import POSTGRES_URL


def _schema_app() -> FastAPI:
    """The app, only to serve /openapi.json at collection time (in-memory database)."""
    return create_app(load_settings(database_url="sqlite://"), engine=make_engine("sqlite://"))


schema = schemathesis.openapi.from_asgi("/openapi.json", _schema_app())

MAX_EXAMPLES = 12
"""Per operation; 24 operations → ~300 cases."""


@dataclass
class Target:
    app: FastAPI
    headers: dict[str, str]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """The app on its own database (a SQLite file, or the PostgreSQL test schema emptied),
    with an admin key and a little data for small ids to hit: users 1 and 2 (1 with
    credits), models 1 (creator 2) and 2 (premium)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("schemathesis") / "st.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
        engine = make_engine(url)
    else:
        schema_name = request.getfixturevalue("postgres_schema")
        url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema_name}"
        engine = make_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema_name}"})
        # reference_epoch keeps its seeded row (the TRUNCATE moves it forward, by trigger)
        tables = ", ".join(
            f'"{t.name}"' for t in metadata.sorted_tables if t.name != "reference_epoch"
        )
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        with Session(engine) as session, session.begin():
            ledger.ensure_platform_accounts(session)
    app = create_app(load_settings(database_url=url), engine=engine)
    with app.state.db.write() as session:
        admin = auth.create_key(session, auth.Role.ADMIN, name="schemathesis").secret
    headers = {"Authorization": f"Bearer {admin}"}
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        for ext in ("st-1", "st-2"):
            assert client.post(
                "/api/v1/users", json={"external_id": ext}, headers=headers
            ).is_success
        r = client.post(
            "/api/v1/users/1/grants",
            json={"amount_ucr": 10**12},
            headers={**headers, "Idempotency-Key": "seed"},
        )
        assert r.is_success, r.text
        price = {"input_ucr_per_mtok": 1_000_000, "output_ucr_per_mtok": 2_000_000}
        for body in (
            {"slug": "m1", "name": "m1", "creator_id": 2, "price": price},
            {"slug": "m2", "name": "m2", "is_premium": True, "access_price_ucr": 5, "price": price},
        ):
            assert client.post("/api/v1/models", json=body, headers=headers).is_success
    yield Target(app, headers)
    with Session(engine) as session, session.begin():
        broken = invariants.check(session)
    engine.dispose()
    assert broken == [], f"ledger invariants broken after fuzzing: {broken}"


CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api(case: schemathesis.Case, target: Target) -> None:
    case.call_and_validate(app=target.app, headers=target.headers, checks=CHECKS)


def test_openapi_documents_the_error_responses() -> None:
    spec = _schema_app().openapi()
    missing = []
    for path, ops in spec["paths"].items():
        if not path.startswith("/api/v1"):
            continue
        for method, op in ops.items():
            responses = op["responses"]
            for status in ("401", "422"):
                content = responses.get(status, {}).get("content", {})
                if PROBLEM_JSON not in content:
                    missing.append(f"{method.upper()} {path} {status}")
            if "{" in path and "404" not in responses:
                missing.append(f"{method.upper()} {path} 404")
    assert missing == []
