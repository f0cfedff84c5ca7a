"""Row-level security on PostgreSQL (issue 16 part 9): a second wall behind the routes'
scoping (DESIGN §11).

Migration 0015 enables RLS on the user-data tables (:data:`TABLES`) with one ``SELECT``
policy each, for every role but the tables' owner: a row is visible when it belongs to the
user named by the transaction's setting :data:`SETTING` (``modelbank.user_id``); without the
setting, nothing is. It creates the role :data:`ROLE` (``modelbank_user_reader``, no login,
``SELECT`` on the schema's tables) and grants it to the migrating role. The tables' owner
(the application's login role, which ran the migrations) is not bound (no ``FORCE``): writes,
jobs, admin and service reads see everything, as before.

A read transaction of a request made with a *user* key (:func:`bind_context`, set by the
API's authentication) starts with ``set_config('role', ROLE, true)`` and
``set_config(SETTING, <user id>, true)`` — both local to the transaction, so they end with
it (safe with PgBouncer's transaction pooling). Under that role PostgreSQL itself filters
the rows: a route that forgot its scoping still reads nothing of another user's.

Tables left out on purpose: ``usage_events``, ``earnings`` and ``users`` (a creator reads
another user's usage row and their own earnings line through the explain route; a payer
sees the beneficiaries' lines), ``route_logs`` (a depositor reads, redacted, the requests of
other users that their resource served), and the catalog (shared). SQLite has no RLS: there the
routes' scoping is the only wall.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from modelbank.errors import NotFound

ROLE = "modelbank_user_reader"
SETTING = "modelbank.user_id"

CURRENT_USER = f"NULLIF(current_setting('{SETTING}', true), '')::bigint"
"""The bound user in SQL (NULL when unbound: no row matches)."""

OWN_ACCOUNTS = f"SELECT id FROM accounts WHERE owner_id = {CURRENT_USER}"

TABLES: dict[str, str] = {
    "accounts": f"owner_id IS NULL OR owner_id = {CURRENT_USER}",
    "transfers": f"debit_account_id IN ({OWN_ACCOUNTS}) OR credit_account_id IN ({OWN_ACCOUNTS})",
    "grants": f"user_id = {CURRENT_USER}",
    "grant_burns": f"user_id = {CURRENT_USER}",
    "wallet_holds": f"user_id = {CURRENT_USER}",
    "wallet_alerts": f"user_id = {CURRENT_USER}",
    "purchases": f"user_id = {CURRENT_USER}",
    "payouts": f"user_id = {CURRENT_USER}",
    "earnings_debts": f"user_id = {CURRENT_USER}",
    "pool_debts": f"user_id = {CURRENT_USER}",
}
"""Each protected table and the rows a bound user sees (platform accounts, owner NULL, are
visible: they carry no user's data)."""

INSUFFICIENT_PRIVILEGE = "42501"


class NotVisible(NotFound):
    """A bound read tried to touch rows outside its user's (a route that forgot its scoping
    and went on to open what it could not see): answered as "not found", like the
    routes' own scoping."""

    code = "not_found"


def denied(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL refusing a bound transaction (insufficient privilege)."""
    orig = getattr(exc, "orig", None) if isinstance(exc, DBAPIError) else None
    return getattr(orig, "sqlstate", None) == INSUFFICIENT_PRIVILEGE


_bound: ContextVar[int | None] = ContextVar("modelbank_rls_user", default=None)


def bind_context(user_id: int | None) -> None:
    """Bind the reads of the current request (task, and the threads it hands work to) to
    ``user_id`` (None: unbound)."""
    _bound.set(user_id)


def bound_user() -> int | None:
    """The user the current context's reads are bound to."""
    return _bound.get()


def available(engine: Engine) -> bool:
    """Whether ``engine``'s login role may take :data:`ROLE` (PostgreSQL, migration 0015
    applied with the right to create or grant it)."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT to_regrole(:role) IS NOT NULL"
                    " AND pg_has_role(current_user, to_regrole(:role), 'MEMBER')"
                ),
                {"role": ROLE},
            ).scalar()
        )


def bind(session: Session, user_id: int) -> None:
    """Make the rest of ``session``'s transaction read as ``user_id`` under :data:`ROLE`
    (one round trip)."""
    session.execute(
        text("SELECT set_config('role', :role, true), set_config(:setting, :user, true)"),
        {"role": ROLE, "setting": SETTING, "user": str(int(user_id))},
    )


@contextmanager
def as_user(session: Session, user_id: int) -> Iterator[Session]:
    """``session`` bound to ``user_id`` for the rest of its transaction (tests, scripts)."""
    bind(session, user_id)
    yield session
