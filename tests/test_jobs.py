"""The in-process job runner of ``modelbank serve`` (``MODELBANK_JOBS_INTERVAL_S``)."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from modelbank.api import create_app
from modelbank.config import load_settings
from modelbank.users import service as users
from modelbank.wallets import holds
from modelbank.wallets import service as wallets
from tests.api.conftest import TEST_SECRET_KEY
from tests.conftest import Db


def test_serve_runs_jobs_in_process_when_enabled(db: Db) -> None:
    with db.tx() as session:
        user = users.create_user(session, "runner")
        wallets.grant(session, user.id, 4_000_000, idempotency_key="runner")
        hold = holds.place(session, user.id, 3_000_000, timeout_s=1, idempotency_key="h")
    settings = load_settings(
        database_url=db.url, secret_key=TEST_SECRET_KEY, jobs_interval_s=0.2, group_commit=False
    )
    with TestClient(create_app(settings, engine=db.engine)):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with db.tx() as session:
                if holds.get_hold(session, hold.id).status == "voided":
                    break
            time.sleep(0.1)
    with db.tx() as session:
        found = holds.get_hold(session, hold.id)
        assert (found.status, found.reason) == ("voided", "expired")
        assert wallets.balance(session, user.id).available_ucr == 4_000_000
