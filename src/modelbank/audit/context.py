"""Who is acting: one context, set at the edge, read by :func:`~modelbank.audit.service.record`.

An API request opens a :class:`Scope` (the ASGI middleware in ``api/app.py``, with the
request id from ``X-Request-Id`` or a new one); the dependency that authenticates the
caller (API key or dashboard session) names the actor in it with :func:`identify`. The
scope is a mutable object in a context variable, so the actor named by a dependency that
FastAPI runs on its thread pool (in a *copy* of the context) is seen by the endpoint too.
The CLI names itself with :func:`acting_as`; anything else (jobs, scripts, tests) acts as
``system``. Services never take the actor as an argument: an action is audited however it
is reached.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

MAX_REQUEST_ID = 64
"""Characters kept of a caller's ``X-Request-Id`` (the column's width)."""
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")


@dataclass(frozen=True, slots=True)
class Actor:
    """The actor of an action: ``kind`` (``admin``, ``service``, ``user`` for API keys;
    ``cli``, ``stripe``, ``system``), the API key id and user id when known, and the
    request id the action belongs to."""

    kind: str
    key_id: int | None = None
    user_id: int | None = None
    request_id: str | None = None


SYSTEM = Actor("system")
"""Whoever acts when nobody said: jobs, scripts, tests."""


@dataclass(slots=True)
class Scope:
    """One request's audit scope: its id and, once authenticated, its actor."""

    request_id: str
    actor: Actor | None = field(default=None)


_scope: ContextVar[Scope | None] = ContextVar("modelbank_audit_scope", default=None)
_actor: ContextVar[Actor] = ContextVar("modelbank_audit_actor", default=SYSTEM)


def request_id_from(header: str | None) -> str:
    """The caller's ``X-Request-Id`` when it is a sane token (1–64 of ``A–Z a–z 0–9 . _ :
    -``), otherwise a new random one (32 hex digits)."""
    if header and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


@contextmanager
def request_scope(request_id: str) -> Iterator[Scope]:
    """Open a request's :class:`Scope` for the block (the API middleware)."""
    token = _scope.set(Scope(request_id))
    try:
        yield _scope.get()  # type: ignore[misc]
    finally:
        _scope.reset(token)


def identify(kind: str, *, key_id: int | None = None, user_id: int | None = None) -> None:
    """Name the actor of the current request (no-op outside one)."""
    scope = _scope.get()
    if scope is not None:
        scope.actor = Actor(kind, key_id, user_id, scope.request_id)


def current_actor() -> Actor:
    """The actor of the code running now: the request's, the one :func:`acting_as` set, or
    :data:`SYSTEM` (with the request id when inside a request)."""
    scope = _scope.get()
    if scope is not None:
        return scope.actor or Actor(_actor.get().kind, request_id=scope.request_id)
    return _actor.get()


def act_as(actor: Actor) -> None:
    """Make ``actor`` the actor of the rest of this context (a CLI command's process)."""
    _actor.set(actor)


@contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    """Run a block as ``actor`` (the CLI, the Stripe webhook), then restore the previous
    one. Inside a request whose caller is identified, that caller still wins."""
    token = _actor.set(actor)
    try:
        yield actor
    finally:
        _actor.reset(token)
