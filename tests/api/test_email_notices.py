"""Email notices (issue 13): queued in the transaction of what they report, sent after the
commit by the jobs to a local SMTP sink (aiosmtpd), with the amounts in the mail; retried
while the server is down; nothing queued for a user without an address. SQLite and
PostgreSQL."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from modelbank import jobs
from modelbank.config import Settings, load_settings
from modelbank.notices import service as notices
from modelbank.secrets import SecretBox
from modelbank.tasks import service as tasks
from tests.api.conftest import TEST_SECRET_KEY, Api
from tests.api.test_wallets import CR, V1, confirm, meter, package_id, spend


class Sink:
    """An aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    handler = Sink()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def settings(api: Api, port: int) -> Settings:
    return load_settings(
        database_url=api.db.url,
        secret_key=TEST_SECRET_KEY,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_from="credits@modelbank.test",
        smtp_timeout_s=5,
    )


def run_jobs(api: Api, port: int) -> jobs.JobReport:
    return jobs.run_once(
        api.db.factory, box=SecretBox(TEST_SECRET_KEY), settings=settings(api, port)
    )


def body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def test_low_balance_and_auto_topup_mails_carry_the_amounts(
    api: Api, sink: tuple[Sink, int]
) -> None:
    handler, port = sink
    user_id, user = api.user("alice", credits_ucr=100 * CR)
    creator, _ = api.user("creator")
    meter(api, creator=creator)
    r = api.client.put(
        f"{V1}/users/{user_id}/email-notices", json={"email": "alice@example.com"}, headers=user
    )
    assert r.status_code == 200 and r.json()["email"] == "alice@example.com", r.text
    assert api.client.get(f"{V1}/users/{user_id}/email-notices", headers=user).json()["enabled"]
    api.client.put(
        f"{V1}/users/{user_id}/low-balance", json={"threshold_ucr": 30 * CR}, headers=user
    )
    r = api.client.put(
        f"{V1}/users/{user_id}/auto-topup",
        json={
            "enabled": True,
            "threshold_ucr": 20 * CR,
            "package_id": package_id(api, "starter"),
            "monthly_cap_count": 2,
            "monthly_cap_uusd": 20_000_000,
        },
        headers=user,
    )
    assert r.status_code == 200, r.text
    spend(api, user_id, 85, key="a1")  # 15 cr left: below both thresholds
    run_jobs(api, port)
    [low] = handler.messages
    assert low["To"] == "alice@example.com" and low["From"] == "credits@modelbank.test"
    assert low["Subject"] == "Your credit balance is low: 15.00 cr left"
    assert "15.00 cr available" in body(low) and "threshold of 30.00 cr" in body(low)

    r = api.client.get(f"{V1}/users/{user_id}/purchases", headers=user)
    [purchase] = [p for p in r.json()["items"] if p["origin"] == "auto_topup"]
    assert confirm(api, purchase["id"], "ok-1").status_code == 200
    run_jobs(api, port)
    done = handler.messages[-1]
    assert done["Subject"] == "Auto top-up: 50.00 cr added to your wallet"
    text = body(done)
    assert "bought 50.00 cr for $4.99" in text and "below 20.00 cr" in text
    assert "Your balance is now 65.00 cr." in text
    assert run_jobs(api, port).tasks_done == 0  # each mail once
    assert len(handler.messages) == 2


def test_notify_payout_and_renewal_and_no_address(api: Api, sink: tuple[Sink, int]) -> None:
    handler, port = sink
    user_id, _ = api.user("bob")
    other, _ = api.user("carol")
    with api.db.tx() as session:
        notices.set_recipient(session, user_id, "bob@example.com")
        task = notices.notify(
            session,
            user_id,
            "payout_completed",
            {"payout_id": 7, "amount_ucr": 1_234_500_000, "amount_uusd": 12_345_000},
        )
        assert task is not None
        notices.notify(
            session,
            user_id,
            "subscription_renewal_failed",
            {"plan_name": "Pro", "amount_uusd": 9_990_000},
        )
        assert notices.notify(session, other, "low_balance", {"available_ucr": 1}) is None
    run_jobs(api, port)
    subjects = [m["Subject"] for m in handler.messages]
    assert subjects == [
        "Payout 7 completed: $12.34",  # $12.345 rounded half-even
        "Your subscription could not be renewed",
    ]
    assert "payout 7 of 1,234.50 cr" in body(handler.messages[0])
    assert "to Pro ($9.99)" in body(handler.messages[1])


def test_mail_is_retried_while_the_server_is_down(api: Api) -> None:
    user_id, _ = api.user("dora")
    with api.db.tx() as session:
        notices.set_recipient(session, user_id, "dora@example.com")
        notices.notify(session, user_id, "low_balance", {"available_ucr": 0, "threshold_ucr": 1})
    port = free_port()  # nobody listens there
    report = run_jobs(api, port)
    assert report.tasks_done == 0 and report.task_attempts_failed == 1
    with api.db.tx() as session:
        [row] = tasks.list_tasks(session, kind="email")
    assert row.status == "pending" and row.attempts == 1 and row.last_error
    handler = Sink()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        later = row.next_attempt_at
        jobs.run_once(
            api.db.factory,
            box=SecretBox(TEST_SECRET_KEY),
            settings=settings(api, port),
            now=later,
        )
    finally:
        controller.stop()
    assert [m["To"] for m in handler.messages] == ["dora@example.com"]
    with api.db.tx() as session:
        [row] = tasks.list_tasks(session, kind="email")
    assert row.status == "done" and row.attempts == 2


def test_bad_addresses_are_refused(api: Api) -> None:
    user_id, user = api.user("eve")
    for bad in ("not-an-email", "a@b.c\nBcc: x@y.z", "a@b.c, d@e.f"):
        r = api.client.put(f"{V1}/users/{user_id}/email-notices", json={"email": bad}, headers=user)
        assert r.status_code == 422, (bad, r.text)
