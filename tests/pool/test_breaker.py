"""Circuit breaker (DESIGN §9; pool/breaker.py): closed → open → half-open probe → closed,
caller errors never count, and how upstream answers and transport errors are classified."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelbank.pool.breaker import (
    Admission,
    Breaker,
    BreakerPolicy,
    Outcome,
    State,
    UpstreamFailure,
    admission,
    claim_probe,
    classify,
    record,
)

T0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)
POLICY = BreakerPolicy(failure_threshold=3, success_rate_floor=0.5, min_requests=10, window=9)


def _run(outcomes: list[Outcome], breaker: Breaker | None = None) -> Breaker:
    b = breaker or Breaker()
    for outcome in outcomes:
        b = record(b, outcome, T0, POLICY, probe=False)
    return b


def test_opens_after_n_consecutive_failures_and_a_success_resets_the_count() -> None:
    b = _run([Outcome.UPSTREAM_FAILURE] * 2 + [Outcome.SUCCESS] + [Outcome.UPSTREAM_FAILURE] * 2)
    assert b.state is State.CLOSED and b.consecutive_failures == 2
    b = record(b, Outcome.UPSTREAM_FAILURE, T0, POLICY, probe=False)
    assert (b.state, b.opened_at, b.consecutive_failures) == (State.OPEN, T0, 3)
    assert (b.requests, b.failures) == (6, 5)


def test_opens_when_the_success_rate_falls_under_the_floor() -> None:
    # alternate 2 failures and 1 success: never 3 in a row, but a 1/3 success rate
    pattern = [Outcome.UPSTREAM_FAILURE, Outcome.UPSTREAM_FAILURE, Outcome.SUCCESS] * 10
    b = Breaker()
    for outcome in pattern:
        b = record(b, outcome, T0, POLICY, probe=False)
        if b.state is State.OPEN:
            break
    assert b.state is State.OPEN
    assert b.requests >= POLICY.min_requests
    assert b.consecutive_failures < POLICY.failure_threshold
    assert b.success_rate < POLICY.success_rate_floor


def test_caller_errors_and_cancellations_never_count() -> None:
    b = _run([Outcome.UPSTREAM_FAILURE] * 2)
    after = _run([Outcome.CALLER_ERROR, Outcome.CANCELLED] * 50, b)
    assert after == b


def test_open_refuses_until_the_cooldown_then_admits_one_probe() -> None:
    b = _run([Outcome.UPSTREAM_FAILURE] * 3)
    assert admission(b, T0 + timedelta(seconds=29), POLICY) is Admission.DENY
    assert admission(b, T0 + timedelta(seconds=30), POLICY) is Admission.PROBE
    probing = claim_probe(b, T0 + timedelta(seconds=30))
    assert probing.state is State.HALF_OPEN
    # while the probe runs, nobody else is admitted …
    assert admission(probing, T0 + timedelta(seconds=31), POLICY) is Admission.DENY
    # … unless it is presumed lost (its process died)
    lost = T0 + timedelta(seconds=30 + POLICY.probe_timeout_s)
    assert admission(probing, lost, POLICY) is Admission.PROBE


def test_a_successful_probe_closes_with_a_fresh_success_rate() -> None:
    probing = claim_probe(_run([Outcome.UPSTREAM_FAILURE] * 3), T0)
    closed = record(probing, Outcome.SUCCESS, T0, POLICY, probe=True)
    assert (closed.state, closed.opened_at, closed.consecutive_failures) == (State.CLOSED, None, 0)
    assert closed.success_rate == 1.0
    assert admission(closed, T0, POLICY) is Admission.ALLOW


def test_a_failed_probe_reopens_and_the_cooldown_starts_again() -> None:
    later = T0 + timedelta(seconds=40)
    probing = claim_probe(_run([Outcome.UPSTREAM_FAILURE] * 3), later)
    reopened = record(probing, Outcome.UPSTREAM_FAILURE, later, POLICY, probe=True)
    assert (reopened.state, reopened.opened_at) == (State.OPEN, later)
    assert admission(reopened, later + timedelta(seconds=29), POLICY) is Admission.DENY


def test_a_probe_without_verdict_leaves_it_claimable_at_once() -> None:
    probing = claim_probe(_run([Outcome.UPSTREAM_FAILURE] * 3), T0)
    for neutral in (Outcome.CALLER_ERROR, Outcome.CANCELLED):
        released = record(probing, neutral, T0, POLICY, probe=True)
        assert released.state is State.OPEN
        assert admission(released, T0, POLICY) is Admission.PROBE
        assert released.requests == probing.requests


def test_a_late_failure_keeps_an_open_breaker_open_from_when_it_opened() -> None:
    b = _run([Outcome.UPSTREAM_FAILURE] * 3)
    late = record(b, Outcome.UPSTREAM_FAILURE, T0 + timedelta(seconds=10), POLICY, probe=False)
    assert (late.state, late.opened_at) == (State.OPEN, T0)
    assert record(b, Outcome.SUCCESS, T0, POLICY, probe=False).state is State.OPEN


@settings(max_examples=300)
@given(st.lists(st.sampled_from(list(Outcome)), max_size=80))
def test_a_closed_breaker_opens_exactly_when_a_rule_first_trips(outcomes: list[Outcome]) -> None:
    """Against a reference: counters by hand, open from the first prefix that trips."""
    b = Breaker()
    consecutive = requests = failures = 0
    rate = 1.0
    alpha = 2 / (POLICY.window + 1)
    tripped = False
    for outcome in outcomes:
        b = record(b, outcome, T0, POLICY, probe=False)
        if outcome is Outcome.SUCCESS:
            requests += 1
            consecutive = 0
            rate += alpha * (1 - rate)
        elif outcome is Outcome.UPSTREAM_FAILURE:
            requests += 1
            failures += 1
            consecutive += 1
            rate += alpha * (0 - rate)
            tripped = tripped or consecutive >= 3 or (requests >= 10 and rate < 0.5)
        assert (b.state is State.OPEN) == tripped
        assert (b.requests, b.failures, b.consecutive_failures) == (requests, failures, consecutive)
        assert b.success_rate == pytest.approx(rate)
        assert 0.0 <= b.success_rate <= 1.0


@pytest.mark.parametrize(
    ("status", "kind", "counts", "permanent"),
    [
        (429, "rate_limited", True, False),
        (500, "server_error", True, False),
        (502, "server_error", True, False),
        (503, "server_error", True, False),
        (408, "timeout", True, False),
        (401, "auth", True, True),
        (403, "auth", True, True),
        (402, "payment", True, False),
        (400, "caller_error", False, False),
        (404, "caller_error", False, False),
        (413, "caller_error", False, False),
        (422, "caller_error", False, False),
    ],
)
def test_classify_status(status: int, kind: str, counts: bool, permanent: bool) -> None:
    failure = classify(status=status, body='{"error": {"message": "no"}}')
    assert isinstance(failure, UpstreamFailure)
    assert (failure.kind, failure.status, failure.permanent) == (kind, status, permanent)
    assert failure.retryable is counts
    assert failure.caller_error is not counts
    assert failure.outcome is (Outcome.UPSTREAM_FAILURE if counts else Outcome.CALLER_ERROR)


def test_content_filter_refusals_are_the_callers() -> None:
    body = '{"error": {"code": "content_filter", "message": "flagged"}}'
    failure = classify(status=400, body=body)
    assert (failure.kind, failure.caller_error, failure.retryable) == (
        "content_filter",
        True,
        False,
    )
    assert failure.body == body
    assert classify(status=403, code="content_policy_violation").caller_error


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (httpx.ConnectError("refused"), "connect"),
        (httpx.ConnectTimeout("slow"), "connect"),
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.PoolTimeout("busy"), "timeout"),
        (httpx.ReadError("reset"), "read"),
        (httpx.RemoteProtocolError("closed"), "read"),
        (ConnectionResetError(), "read"),
        (TimeoutError(), "timeout"),
    ],
)
def test_classify_transport_errors(error: BaseException, kind: str) -> None:
    failure = classify(error=error)
    assert (failure.kind, failure.status, failure.retryable) == (kind, None, True)
    assert failure.outcome is Outcome.UPSTREAM_FAILURE and not failure.permanent


def test_classify_refuses_what_is_not_a_failure() -> None:
    with pytest.raises(ValueError, match="not a failure"):
        classify(status=200)
    with pytest.raises(ValueError, match="exactly one"):
        classify()
    with pytest.raises(TypeError, match="not a transport error"):
        classify(error=KeyError("bug"))


def test_the_message_names_kind_and_status_only() -> None:
    failure = classify(status=401, body="invalid key sk-secret-123")
    assert str(failure) == "upstream auth (HTTP 401)"
    assert "sk-secret" not in repr(failure)


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(failure_threshold=0)
    with pytest.raises(ValueError):
        BreakerPolicy(success_rate_floor=1.5)
    with pytest.raises(ValueError):
        BreakerPolicy(cooldown_s=-1)
