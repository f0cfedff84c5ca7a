"""modelbank.client's retries and errors, against httpx.MockTransport (no server): safe and
idempotent calls are retried on 503, 429 (honouring Retry-After), connection errors, with
the same Idempotency-Key every time and a bounded number of tries; other calls are not;
problem+json answers become typed errors. The backoff is property-tested."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelbank.client import (
    NO_RETRIES,
    AsyncClient,
    AuthError,
    Client,
    ConflictError,
    InsufficientFunds,
    ModelbankError,
    NotFoundError,
    RetryPolicy,
    ServerError,
    ValidationError,
)
from modelbank.client._core import retry_after_s

USAGE = {
    "usage_id": 1,
    "model_id": 2,
    "charge_ucr": 2_000,
    "charge": "0.002000 cr",
    "cost_uusd": 10,
    "cost": "$0.000010",
    "balance_ucr": 8_000,
    "balance": "0.008000 cr",
    "earnings": [],
    "price_version_id": 3,
}
WALLET = {
    "user_id": 7,
    "balance_ucr": 5,
    "balance": "0.000005 cr",
    "pending_ucr": 0,
    "pending": "0.000000 cr",
    "available_ucr": 5,
    "available": "0.000005 cr",
    "earnings_ucr": 0,
    "earnings": "0.000000 cr",
}


def problem(status: int, code: str, **extra: Any) -> httpx.Response:
    body = {
        "type": f"urn:modelbank:problem:{code}",
        "title": "t",
        "status": status,
        "detail": f"{code} happened",
        "code": code,
        **extra,
    }
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


class Script:
    """A MockTransport handler answering from a list, recording every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    @property
    def keys(self) -> list[str | None]:
        return [r.headers.get("Idempotency-Key") for r in self.requests]


def client(script: Script, sleeps: list[float], **kwargs: Any) -> Client:
    return Client(
        "http://mb.test",
        "mb_s_test",
        transport=httpx.MockTransport(script),
        sleep=sleeps.append,
        **kwargs,
    )


def test_an_idempotent_charge_is_retried_on_503_with_the_same_key() -> None:
    script = Script(
        httpx.Response(503, text="upstream down"),
        problem(503, "unavailable"),
        httpx.Response(201, json=USAGE, headers={"Idempotency-Hit": "false"}),
    )
    sleeps: list[float] = []
    with client(script, sleeps) as mb:
        usage = mb.charge(7, model="gpt-4o", input_tokens=1_000)
    assert usage.charge_ucr == 2_000 and usage.replayed is False
    assert len(script.requests) == 3 and len(sleeps) == 2
    key = script.keys[0]
    assert key is not None and len(key) == 36 and script.keys == [key, key, key]
    assert script.requests[0].headers["Authorization"] == "Bearer mb_s_test"
    assert all(0 <= s <= 0.2 * 2**i for i, s in enumerate(sleeps))  # jittered backoff


def test_the_callers_key_is_sent_and_a_replay_is_reported() -> None:
    script = Script(httpx.Response(201, json=USAGE, headers={"Idempotency-Hit": "true"}))
    with client(script, []) as mb:
        usage = mb.charge(7, character_id="luna", idempotency_key="req-1")
    assert usage.replayed is True and script.keys == ["req-1"]
    assert script.requests[0].read() == b'{"user_id":7,"character_id":"luna"}'


def test_429_waits_what_retry_after_asks() -> None:
    script = Script(
        httpx.Response(429, json={}, headers={"Retry-After": "2"}),
        httpx.Response(200, json=WALLET),
    )
    sleeps: list[float] = []
    with client(script, sleeps) as mb:
        assert mb.wallet(7).available_ucr == 5
    assert sleeps == [2.0]


def test_a_retry_after_longer_than_the_policy_waits_is_not_waited_for() -> None:
    script = Script(httpx.Response(429, json={}, headers={"Retry-After": "3600"}))
    sleeps: list[float] = []
    with client(script, sleeps) as mb, pytest.raises(ModelbankError) as limited:
        mb.wallet(7)
    assert limited.value.status == 429 and sleeps == [] and len(script.requests) == 1


def test_retries_are_bounded_then_the_error_is_raised() -> None:
    script = Script(*[problem(503, "unavailable") for _ in range(3)])
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=3)
    with client(script, sleeps, retry=policy) as mb, pytest.raises(ServerError) as failed:
        mb.wallet(7)
    assert failed.value.status == 503 and failed.value.code == "unavailable"
    assert len(script.requests) == 3 and len(sleeps) == 2


def test_connection_errors_are_retried_for_safe_calls_only() -> None:
    down = httpx.ConnectError("refused")
    script = Script(down, down, httpx.Response(200, json=WALLET))
    with client(script, []) as mb:
        assert mb.wallet(7).user_id == 7
    assert len(script.requests) == 3

    script = Script(down)
    with client(script, []) as mb, pytest.raises(httpx.ConnectError):
        mb.create_user("alice")  # no idempotency key on this route: never sent twice
    assert len(script.requests) == 1


def test_a_write_without_an_idempotency_key_is_not_retried_on_503() -> None:
    script = Script(problem(503, "unavailable"))
    with client(script, []) as mb, pytest.raises(ServerError):
        mb.start_purchase(7, 1)
    assert len(script.requests) == 1


def test_a_batch_is_retried_with_the_same_generated_event_keys() -> None:
    batch = {"charged": 1, "replayed": 0, "rejected": 0, "results": []}
    script = Script(problem(502, "bad_gateway"), httpx.Response(200, json=batch))
    with client(script, []) as mb:
        assert mb.charge_batch([{"user_id": 7, "model": "m", "input_tokens": 1}]).charged == 1
    first, second = (r.read() for r in script.requests)
    assert first == second and b'"idempotency_key":' in first


def test_no_retries_policy() -> None:
    script = Script(problem(503, "unavailable"))
    with client(script, [], retry=NO_RETRIES) as mb, pytest.raises(ServerError):
        mb.wallet(7)
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    ("answer", "kind", "code"),
    [
        (
            problem(402, "insufficient_funds", needed_ucr=10, available_ucr=5),
            InsufficientFunds,
            "insufficient_funds",
        ),
        (problem(401, "unauthenticated"), AuthError, "unauthenticated"),
        (problem(403, "forbidden"), AuthError, "forbidden"),
        (problem(404, "character_not_found"), NotFoundError, "character_not_found"),
        (problem(409, "idempotency_key_reused"), ConflictError, "idempotency_key_reused"),
        (problem(422, "validation_error", errors=[]), ValidationError, "validation_error"),
        (problem(418, "teapot"), ModelbankError, "teapot"),
        (httpx.Response(500, text="<html>oops</html>"), ServerError, ""),
    ],
)
def test_problems_become_typed_errors(
    answer: httpx.Response, kind: type[ModelbankError], code: str
) -> None:
    script = Script(answer)
    with client(script, [], retry=NO_RETRIES) as mb, pytest.raises(kind) as raised:
        mb.charge(7, model="m", input_tokens=1)
    error = raised.value
    assert type(error) is kind and error.status == answer.status_code and error.code == code
    if code:
        assert error.type == f"urn:modelbank:problem:{code}"
        assert error.detail == f"{code} happened" and error.body["status"] == error.status
    else:
        assert "oops" in error.detail
    if kind is InsufficientFunds:
        assert (error.body["needed_ucr"], error.body["available_ucr"]) == (10, 5)


def test_async_client_retries_the_same_way() -> None:
    script = Script(problem(503, "unavailable"), httpx.Response(201, json=USAGE))
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def scenario() -> None:
        async with AsyncClient(
            "http://mb.test", "k", transport=httpx.MockTransport(script), sleep=sleep
        ) as mb:
            usage = await mb.charge(7, model="m", idempotency_key="k-1")
            assert usage.balance_ucr == 8_000
            with pytest.raises(httpx.ConnectError):
                script.answers.append(httpx.ConnectError("refused"))
                await mb.create_user("bob")

    asyncio.run(scenario())
    assert script.keys[:2] == ["k-1", "k-1"] and len(sleeps) == 1


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=7), usegmt=True)
    fixed: Callable[[], datetime] = lambda: now  # noqa: E731
    assert retry_after_s(later, fixed) == 7.0
    assert retry_after_s("5", fixed) == 5.0
    assert retry_after_s("soon", fixed) is None and retry_after_s(None, fixed) is None
    assert retry_after_s(format_datetime(now - timedelta(seconds=9), usegmt=True), fixed) == 0.0


@given(
    retry=st.integers(min_value=0, max_value=60),
    base=st.floats(min_value=0.001, max_value=2),
    cap=st.floats(min_value=0.001, max_value=60),
    draw=st.floats(min_value=0, max_value=1),
)
def test_backoff_is_bounded_and_grows_with_the_retry(
    retry: int, base: float, cap: float, draw: float
) -> None:
    policy = RetryPolicy(base_delay_s=base, max_delay_s=cap)

    def rng(low: float, high: float) -> float:
        return low + (high - low) * draw

    delay = policy.backoff(retry, rng)
    ceiling = min(cap, base * 2**retry)
    assert 0 <= delay <= ceiling + 1e-12
    assert delay <= policy.backoff(retry + 1, rng) + 1e-12  # the window never shrinks


def test_importing_the_client_loads_no_server_code() -> None:
    """What the import-linter contract says, seen at run time in a fresh interpreter."""
    import subprocess
    import sys

    code = (
        "import sys, modelbank.client; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sqlalchemy', 'fastapi', 'starlette', 'alembic', 'uvicorn') "
        "or (m.startswith('modelbank.') and not m.startswith('modelbank.client'))); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
