"""What every route depends on: the database, the caller, the idempotency key."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from modelbank.audit import context as audit_context
from modelbank.auth import service as auth
from modelbank.auth.errors import Unauthenticated
from modelbank.auth.service import Principal, Role
from modelbank.config import Settings
from modelbank.db import rls
from modelbank.errors import InvalidInput
from modelbank.idempotency import service as idempotency
from modelbank.metering import service as metering
from modelbank.metering.group import GroupCommitter
from modelbank.metering.service import ChargeResult, UsageEvent
from modelbank.ratelimits.service import Limiter
from modelbank.users.errors import UserNotFound

IDEMPOTENCY_HIT = "Idempotency-Hit"


@dataclass
class Database:
    """The app's engine and its two session factories (writes; deferred-read on SQLite)."""

    engine: Engine
    writes: sessionmaker[Session]
    reads: sessionmaker[Session]
    settings: Settings
    committer: GroupCommitter | None = None
    """Set while the app runs (lifespan) when group commit is on."""
    keys: KeyCache = field(default_factory=lambda: KeyCache(0))
    payment_http_client: Any = None
    """The Stripe SDK's HTTP client (None: the SDK's default); tests put a stub here."""
    pool_http_client: Any = None
    """The ``httpx.AsyncClient`` that probes deposited provider keys (None: a fresh client
    per probe); tests put one on an ``httpx.MockTransport`` here."""
    replica: sessionmaker[Session] | None = None
    """Read sessions on the read replica (``MODELBANK_READ_DATABASE_URL``), for
    :meth:`read_analytics`; None: the primary."""
    limiter: Limiter | None = None
    """Rate limits (``MODELBANK_RATE_LIMITS``); None: none."""
    rls: bool = False
    """PostgreSQL with row-level security available (:mod:`modelbank.db.rls`): the reads of
    user keys' requests run bound to their user."""

    async def admit(self, who: Principal) -> None:
        """Count a request of ``who`` against the rate limits (a user key: its user's plan
        too). Raises :class:`~modelbank.ratelimits.errors.RateLimited`."""
        limiter = self.limiter
        if limiter is None:
            return
        if limiter.needs_io(who.user_id):
            await run_in_threadpool(limiter.admit, who.key_id, who.user_id)
        else:
            limiter.admit(who.key_id, who.user_id)

    async def check_tokens(self, who: Principal, user_id: int | None) -> None:
        """Refuse when ``who``'s key or ``user_id`` used up its tokens this minute."""
        if self.limiter is not None:
            await run_in_threadpool(self.limiter.check_tokens, who.key_id, user_id)

    async def add_tokens(self, who: Principal, user_id: int | None, tokens: int) -> None:
        """Count ``tokens`` used for ``user_id`` by ``who``'s key."""
        if self.limiter is not None and tokens > 0:
            await run_in_threadpool(self.limiter.add_tokens, who.key_id, user_id, tokens)

    def authenticate(self, token: str) -> Principal:
        """The principal of ``token`` (a database read). Raises ``Unauthenticated``."""
        with self.read() as session:
            return auth.authenticate(session, token)

    async def charge(self, event: UsageEvent) -> ChargeResult:
        """Charge one event without blocking the event loop: through the group committer
        (events arriving together share one transaction, DESIGN §16) or, without one, in its
        own transaction on the thread pool. Raises what
        :func:`modelbank.metering.service.charge` raises."""
        if self.committer is not None:
            return await self.committer.submit_async(event)
        return await run_in_threadpool(self._charge, event)

    def _charge(self, event: UsageEvent) -> ChargeResult:
        with self.write() as session:
            return metering.charge(session, event)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: commit on success, roll back on any error."""
        with self.writes() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read transaction (never commits anything). In a request made with a user key,
        on PostgreSQL, it reads under row-level security bound to that user
        (:func:`modelbank.db.rls.bind`): another user's rows are not there to be read."""
        with self._read(self.reads) as session:
            yield session

    @contextmanager
    def read_analytics(self) -> Iterator[Session]:
        """A read transaction for dashboards, analytics and exports: on the read replica
        (``MODELBANK_READ_DATABASE_URL``) when one is configured, else as :meth:`read`. A
        replica lags the primary by its replication delay; nothing that decides a charge
        reads here."""
        with self._read(self.replica or self.reads) as session:
            yield session

    @contextmanager
    def _read(self, factory: sessionmaker[Session]) -> Iterator[Session]:
        user_id = rls.bound_user() if self.rls else None
        if user_id is None:
            with factory() as session, session.begin():
                yield session
            return
        try:
            with factory() as session, session.begin():
                rls.bind(session, user_id)
                yield session
        except DBAPIError as exc:
            if rls.denied(exc):
                raise rls.NotVisible("not found") from None
            raise

    def idempotent(
        self,
        principal: Principal,
        key: str,
        route: str,
        body: Any,
        run: Callable[[Session], tuple[int, dict[str, Any]]],
    ) -> JSONResponse:
        """Run ``run(session)`` once per (caller, key): it returns (status, JSON body), which
        is stored in the same transaction. The same key and body later get that response
        again with ``Idempotency-Hit: true``; another body gets 409 (DESIGN §12)."""
        fingerprint = idempotency.fingerprint("POST", route, body)
        with self.write() as session:
            stored = idempotency.lookup(session, principal.scope, key, fingerprint)
            if stored is not None:
                return JSONResponse(
                    stored.body, status_code=stored.status_code, headers={IDEMPOTENCY_HIT: "true"}
                )
            status, response = run(session)
            idempotency.store(session, principal.scope, key, fingerprint, status, response)
        return JSONResponse(response, status_code=status, headers={IDEMPOTENCY_HIT: "false"})


async def database(request: Request) -> Database:
    """The app's :class:`Database`. (``async``: FastAPI runs plain ``def`` dependencies on
    the thread pool, a hop that cost more than the rest of a usage request.)"""
    db: Database = request.app.state.db
    return db


DB = Annotated[Database, Depends(database)]


class KeyCache:
    """Recently authenticated keys, by digest, for ``ttl_s`` seconds: most requests then
    need no database read to authenticate. Revoking through this process's API evicts the
    key at once (:meth:`clear`); another process (CLI, a second server) may see a revoked
    key accepted for up to ``ttl_s``. ``ttl_s`` 0 disables the cache."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Principal, float]] = {}

    def get(self, digest: str) -> Principal | None:
        found = self._entries.get(digest)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    def put(self, digest: str, who: Principal) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[digest] = (who, time.monotonic() + self.ttl_s)

    def clear(self) -> None:
        self._entries.clear()


async def principal(
    db: DB,
    authorization: Annotated[
        str | None, Header(description="`Bearer <API key>`", include_in_schema=False)
    ] = None,
) -> Principal:
    """The caller, from ``Authorization: Bearer <key>``. 401 when missing or invalid."""
    token = None
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            token = value.strip()
    if not token:
        raise Unauthenticated("missing API key: send Authorization: Bearer <key>")
    key_digest = auth.digest(token)
    who = db.keys.get(key_digest)
    if who is None:
        who = await run_in_threadpool(db.authenticate, token)
        db.keys.put(key_digest, who)
    audit_context.identify(who.role.value, key_id=who.key_id, user_id=who.user_id)
    # a user key's request reads that user's rows only (PostgreSQL RLS); others unbound
    rls.bind_context(who.user_id if who.role is Role.USER else None)
    if db.limiter is not None:
        await db.admit(who)
    return who


Caller = Annotated[Principal, Depends(principal)]


async def idempotency_key(
    key: Annotated[
        str,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=idempotency.MAX_KEY_LENGTH,
            description="Unique per operation (1–200 printable ASCII characters); a retry"
            " with the same key and body returns the first response.",
        ),
    ],
) -> str:
    """The request's ``Idempotency-Key`` header (required on credit-moving POSTs)."""
    return idempotency.check_key(key)


IdemKey = Annotated[str, Depends(idempotency_key)]


async def optional_idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=idempotency.MAX_KEY_LENGTH,
            description="Optional: a retry with the same key and body returns the first"
            " response (1–200 printable ASCII characters).",
        ),
    ] = None,
) -> str | None:
    """The request's ``Idempotency-Key`` header where it is optional (None when absent)."""
    return None if key is None else idempotency.check_key(key)


OptionalIdemKey = Annotated[str | None, Depends(optional_idempotency_key)]

PathId = Annotated[int, Path(ge=1, le=2**63 - 1, description="an id (64-bit)")]


def scoped(caller: Principal, user_id: int) -> int:
    """``user_id`` if the caller may act for that user; otherwise 404 (another user's
    resources are not revealed to exist)."""
    if not caller.can_act_for(user_id):
        raise UserNotFound(f"no user {user_id}", user_id=user_id)
    return user_id


def encode_cursor(last_id: int) -> str:
    """An opaque pagination cursor for "after/before this id"."""
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The id inside a cursor; :class:`InvalidInput` for a malformed one."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        last_id = int(value)
        if prefix != "id" or not 0 <= last_id < 2**63:
            raise ValueError(raw)
        return last_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("malformed cursor: pass next_cursor from a previous page") from None
