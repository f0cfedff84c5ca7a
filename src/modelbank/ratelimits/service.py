"""The limiter: admits a request or raises :class:`RateLimited`.

Per request (:meth:`Limiter.admit`, at authentication): the key's requests in this second
against ``MODELBANK_RATE_LIMIT_KEY_REQUESTS_PER_S``, and for a user key its user's requests
against the user's plan. Per token-counting request (``POST /api/v1/usage``, the batch, the
gateway): :meth:`Limiter.check_tokens` before the work refuses a key or user whose tokens this
minute already reached the limit, :meth:`Limiter.add_tokens` after it counts what was used
(the request that crosses the limit is served; the next is refused until the minute ends).

A user's plan follows the wallet's available balance, read at most every ``plan_ttl_s``
seconds per user and process (a top-up raises the limits within that time).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from modelbank.observability.metrics import RATE_LIMITED
from modelbank.ratelimits import plans as plan_tiers
from modelbank.ratelimits.errors import RateLimited
from modelbank.ratelimits.plans import Plan
from modelbank.ratelimits.store import Hit, Store

PLANS_TTL_S = 60.0
"""How long the plan table is reused before being read again (it changes rarely)."""

MAX_CACHED_USERS = 100_000
"""Plan cache entries per process before the cache is emptied (bounded memory)."""


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """Limits of every API key (0: none)."""

    requests_per_s: int = 0
    tokens_per_min: int = 0


@dataclass(frozen=True, slots=True)
class _Check:
    hit: Hit
    limit: int
    name: str
    retry_after_s: int


class Limiter:
    """See the module doc. ``store``: the counters; ``reads``: sessions to read plans and
    balances; ``clock``: Unix seconds (tests move it). Thread-safe."""

    def __init__(
        self,
        store: Store,
        reads: sessionmaker[Session],
        keys: KeyLimits,
        *,
        plan_ttl_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.reads = reads
        self.keys = keys
        self.plan_ttl_s = plan_ttl_s
        self.clock = clock
        self._plans: tuple[float, tuple[Plan, ...]] | None = None
        self._users: dict[int, tuple[float, Plan]] = {}
        self._lock = threading.Lock()

    def needs_io(self, user_id: int | None) -> bool:
        """Whether :meth:`admit` may wait on I/O (the store, or a plan not cached): the
        HTTP layer then calls it off the event loop."""
        if self.store.blocking:
            return True
        cached = None if user_id is None else self._users.get(user_id)
        return user_id is not None and (cached is None or cached[0] <= time.monotonic())

    def admit(self, key_id: int, user_id: int | None) -> None:
        """Count one request of ``key_id`` (and of ``user_id``, a user key's user). Raises
        :class:`RateLimited` (``key_requests_per_s`` / ``user_requests_per_s``)."""
        now = self.clock()
        second = int(now)
        checks = []
        if self.keys.requests_per_s:
            checks.append(
                _Check(Hit(f"k:{key_id}:r", second, 1, 2), self.keys.requests_per_s, "key", 1)
            )
        if user_id is not None:
            plan = self.plan(user_id)
            if plan.requests_per_s:
                hit = Hit(f"u:{user_id}:r", second, 1, 2)
                checks.append(_Check(hit, plan.requests_per_s, f"user ({plan.name} plan)", 1))
        self._run(checks, "requests_per_s", "requests per second")

    def check_tokens(self, key_id: int, user_id: int | None) -> None:
        """Refuse (:class:`RateLimited`, ``…_tokens_per_min``) when the key's or the user's
        tokens in this minute already reached their limit; counts nothing."""
        self._run(self._token_checks(key_id, user_id, 0), "tokens_per_min", "tokens per minute")

    def add_tokens(self, key_id: int | None, user_id: int | None, tokens: int) -> None:
        """Count ``tokens`` (input + output) used by a request of ``key_id`` (None: no key
        bucket) for ``user_id``; never refuses."""
        checks = self._token_checks(key_id, user_id, tokens) if tokens > 0 else []
        if checks:
            self.store.hit([c.hit for c in checks])

    def plan(self, user_id: int) -> Plan:
        """The user's plan by available balance (cached ``plan_ttl_s``)."""
        now = time.monotonic()
        cached = self._users.get(user_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        with self.reads() as session, session.begin():
            plans = self._plan_table(session, now)
            plan = plan_tiers.plan_for(plans, plan_tiers.available_balance(session, user_id))
        with self._lock:
            if len(self._users) >= MAX_CACHED_USERS:
                self._users.clear()
            self._users[user_id] = (now + self.plan_ttl_s, plan)
        return plan

    def forget(self, user_id: int | None = None) -> None:
        """Drop cached plans (one user's, or all): the next request reads the balance."""
        with self._lock:
            if user_id is None:
                self._users.clear()
                self._plans = None
            else:
                self._users.pop(user_id, None)

    def _plan_table(self, session: Session, now: float) -> tuple[Plan, ...]:
        if self._plans is None or self._plans[0] < now:
            self._plans = (now + PLANS_TTL_S, plan_tiers.load_plans(session))
        return self._plans[1]

    def _token_checks(self, key_id: int | None, user_id: int | None, cost: int) -> list[_Check]:
        now = self.clock()
        minute = int(now // 60)
        retry = max(1, math.ceil(60 - now % 60))
        checks = []
        if self.keys.tokens_per_min and key_id is not None:
            hit = Hit(f"k:{key_id}:t", minute, cost, 120)
            checks.append(_Check(hit, self.keys.tokens_per_min, "key", retry))
        if user_id is not None:
            plan = self.plan(user_id)
            if plan.tokens_per_min:
                hit = Hit(f"u:{user_id}:t", minute, cost, 120)
                checks.append(_Check(hit, plan.tokens_per_min, f"user ({plan.name} plan)", retry))
        return checks

    def _run(self, checks: Sequence[_Check], unit: str, words: str) -> None:
        if not checks:
            return
        counts = self.store.hit([c.hit for c in checks])
        for check, count in zip(checks, counts, strict=True):
            over = count > check.limit if check.hit.cost else count >= check.limit
            if over:
                who = "key" if check.name == "key" else "user"
                RATE_LIMITED.labels(f"{who}_{unit}").inc()
                raise RateLimited(
                    f"rate limit of the {check.name}: {check.limit} {words}; retry in"
                    f" {check.retry_after_s} s",
                    limit=f"{who}_{unit}",
                    limit_value=check.limit,
                    retry_after_s=check.retry_after_s,
                )


__all__ = ["KeyLimits", "Limiter", "RateLimited"]
