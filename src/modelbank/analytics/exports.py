"""CSV exports of usage, transfers, earnings and payouts (DESIGN §8, issue "Creator economy").

The read side, like :mod:`modelbank.analytics.service`: it reads the tables directly. Every
kind is a declarative list of columns over one table (plus joins for names); one generic
streamer pages through it in id order with keyset pagination, one short read transaction per
page of :data:`PAGE_SIZE` rows, and yields CSV text (header first). A scope is every row
(``user_id`` None: the caller must be an admin; enforced by the caller) or one user's:

* ``usage``: the user's usage events; gateway usage (DESIGN §9) like any other, with the pool
  resource that served it (``resource_id``, empty for usage reported through the API) and
  ``usage_estimated`` (``true`` when a client left mid-stream and the upstream reported no
  usage, so the tokens were estimated from the streamed text; else ``false``);
* ``transfers``: transfers debiting or crediting the user's wallet or earnings account, holds
  (``pending``) and their resolutions (``post`` / ``void``) included;
* ``earnings``: earning lines whose beneficiary is the user;
* ``payouts``: the user's payout requests.

The period is ``[since, until)`` on ``created_at`` (UTC, timezone-aware). Amounts are
integers, ``*_ucr`` in µcr and ``*_uusd`` in µUSD; a display column (``amount``, ``charge``:
``"1,234.500000 cr"``) sits beside the main credit amount. Rows committed by other
transactions while an export runs appear when their id is above the page cursor at that
moment; each page is a consistent snapshot, the whole export is not.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, FromClause, Table, false, func, or_, select
from sqlalchemy.orm import Session

from modelbank.catalog.models import models_table as models
from modelbank.earnings.models import earnings_table as earnings
from modelbank.earnings.models import payouts_table as payouts
from modelbank.errors import InvalidInput
from modelbank.ledger.codes import USER_ACCOUNT_CODES, TransferFlags
from modelbank.ledger.models import accounts_table as accounts
from modelbank.ledger.models import transfers_table as transfers
from modelbank.metering.models import usage_events_table as usage
from modelbank.money import UCR_PER_CREDIT
from modelbank.users.errors import UserNotFound
from modelbank.users.models import users_table as users

PAGE_SIZE = 5_000
"""Rows read per page (one short read transaction each): large enough that the per-query
overhead vanishes, small enough that a page is a few MB and no transaction stays open long
on a busy database."""


class ExportKind(StrEnum):
    """What an export lists."""

    USAGE = "usage"
    """Charged usage events with what they cost and earned (``usage_events``)."""
    TRANSFERS = "transfers"
    """Ledger transfers, holds and their resolutions included (``transfers``)."""
    EARNINGS = "earnings"
    """One line per beneficiary per usage event that paid them (``earnings``)."""
    PAYOUTS = "payouts"
    """Payout requests and what became of them (``payouts``)."""


class UnknownExportKind(InvalidInput):
    """The export kind is not one of :class:`ExportKind`."""

    code = "unknown_export_kind"


class InvalidPeriod(InvalidInput):
    """A period bound without a time zone, or ``since`` not before ``until``."""

    code = "invalid_period"


def parse_kind(kind: ExportKind | str) -> ExportKind:
    """``kind`` as an :class:`ExportKind`. Raises :class:`UnknownExportKind`."""
    try:
        return ExportKind(kind)
    except ValueError:
        names = ", ".join(k.value for k in ExportKind)
        raise UnknownExportKind(
            f"unknown export kind {kind!r}: expected one of {names}", kind=str(kind)
        ) from None


# ------------------------------------------------------------------ cell formatting


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat()


def format_ucr(amount_ucr: int) -> str:
    """``amount_ucr`` µcr for display, like :func:`modelbank.money.format_credits` with six
    places (``-1,234.500000 cr``) but in plain integer arithmetic: cheap enough for every row
    of a large export."""
    whole, frac = divmod(abs(amount_ucr), UCR_PER_CREDIT)
    return f"{'-' if amount_ucr < 0 else ''}{whole:,}.{frac:06d} cr"


def _flag(value: bool | None) -> str:
    return "true" if value else "false"


def _transfer_kind(flags: int) -> str:
    if flags & TransferFlags.PENDING:
        return "pending"
    if flags & TransferFlags.POST_PENDING:
        return "post"
    if flags & TransferFlags.VOID_PENDING:
        return "void"
    return "single"


# ------------------------------------------------------------------ the kinds


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    expr: ColumnElement[Any]
    show: Callable[[Any], Any] | None = None
    """How to write the value; None: as it is (csv writes None as "", str() of the rest)."""


@dataclass(frozen=True, slots=True)
class _Spec:
    """One kind: its table (ids key the pages, ``created_at`` the period, ``user_column`` the
    scope unless ``by_accounts``), the FROM clause with its joins, the columns."""

    table: Table
    source: FromClause
    columns: tuple[_Column, ...]
    user_column: str | None = None
    by_accounts: bool = False
    """Scope by the user's ledger accounts (debit or credit side) instead of a user column."""


def _col(name: str, expr: ColumnElement[Any], show: Callable[[Any], Any] | None = None) -> _Column:
    return _Column(name, expr, show)


_debit = accounts.alias("debit_account")
_credit = accounts.alias("credit_account")

_SPECS: dict[ExportKind, _Spec] = {
    ExportKind.USAGE: _Spec(
        table=usage,
        source=usage.join(models, models.c.id == usage.c.model_id),
        user_column="user_id",
        columns=(
            _col("id", usage.c.id),
            _col("created_at", usage.c.created_at, _iso),
            _col("occurred_at", usage.c.occurred_at, _iso),
            _col("user_id", usage.c.user_id),
            _col("model_id", usage.c.model_id),
            _col("model", models.c.slug),
            _col("usage_type", usage.c.usage_type),
            _col("input_tokens", usage.c.input_tokens),
            _col("cached_input_tokens", usage.c.cached_input_tokens),
            _col("output_tokens", usage.c.output_tokens),
            _col("units", usage.c.units),
            _col("charge_ucr", usage.c.charge_ucr),
            _col("charge", usage.c.charge_ucr, format_ucr),
            _col("cost_uusd", usage.c.cost_uusd),
            _col("earnings_ucr", usage.c.earnings_ucr),
            _col("margin_ucr", usage.c.margin_ucr),
            _col("earnings_note", usage.c.earnings_note),
            _col("price_version_id", usage.c.price_version_id),
            _col("idempotency_key", usage.c.idempotency_key),
            _col("resource_id", usage.c.resource_id),
            _col("usage_estimated", usage.c.usage_estimated, _flag),
        ),
    ),
    ExportKind.TRANSFERS: _Spec(
        table=transfers,
        source=transfers.join(_debit, _debit.c.id == transfers.c.debit_account_id).join(
            _credit, _credit.c.id == transfers.c.credit_account_id
        ),
        by_accounts=True,
        columns=(
            _col("id", transfers.c.id),
            _col("created_at", transfers.c.created_at, _iso),
            _col("code", transfers.c.code),
            _col("kind", transfers.c.flags, _transfer_kind),
            _col("pending_id", transfers.c.pending_id),
            _col("debit_account_id", transfers.c.debit_account_id),
            _col("debit_account_code", _debit.c.code),
            _col("debit_owner_id", _debit.c.owner_id),
            _col("credit_account_id", transfers.c.credit_account_id),
            _col("credit_account_code", _credit.c.code),
            _col("credit_owner_id", _credit.c.owner_id),
            _col("amount_ucr", transfers.c.amount),
            _col("amount", transfers.c.amount, format_ucr),
            _col("ref_type", transfers.c.ref_type),
            _col("ref_id", transfers.c.ref_id),
            _col("reverses_id", transfers.c.reverses_id),
        ),
    ),
    ExportKind.EARNINGS: _Spec(
        table=earnings,
        source=earnings.join(models, models.c.id == earnings.c.model_id),
        user_column="user_id",
        columns=(
            _col("id", earnings.c.id),
            _col("created_at", earnings.c.created_at, _iso),
            _col("usage_id", earnings.c.usage_id),
            _col("model_id", earnings.c.model_id),
            _col("model", models.c.slug),
            _col("user_id", earnings.c.user_id),
            _col("amount_ucr", earnings.c.amount_ucr),
            _col("amount", earnings.c.amount_ucr, format_ucr),
            _col("tokens", earnings.c.tokens),
            _col("rule_version", earnings.c.rule_version),
            _col("popularity_multiplier", earnings.c.popularity_multiplier),
            _col("type_multiplier", earnings.c.type_multiplier),
            _col("share_bps", earnings.c.share_bps),
        ),
    ),
    ExportKind.PAYOUTS: _Spec(
        table=payouts,
        source=payouts,
        user_column="user_id",
        columns=(
            _col("id", payouts.c.id),
            _col("created_at", payouts.c.created_at, _iso),
            _col("user_id", payouts.c.user_id),
            _col("status", payouts.c.status),
            _col("amount_ucr", payouts.c.amount_ucr),
            _col("amount", payouts.c.amount_ucr, format_ucr),
            _col("amount_uusd", payouts.c.amount_uusd),
            _col("credits_per_usd", payouts.c.credits_per_usd),
            _col("adapter", payouts.c.adapter),
            _col("external_reference", payouts.c.external_reference),
            _col("failure_reason", payouts.c.failure_reason),
            _col("resolved_at", payouts.c.resolved_at, _iso),
        ),
    ),
}


def columns(kind: ExportKind | str) -> tuple[str, ...]:
    """The CSV header of ``kind``. Raises :class:`UnknownExportKind`."""
    return tuple(c.name for c in _SPECS[parse_kind(kind)].columns)


# ------------------------------------------------------------------ scope and period


def _filters(
    session: Session,
    spec: _Spec,
    user_id: int | None,
    since: datetime | None,
    until: datetime | None,
) -> list[ColumnElement[bool]]:
    """The WHERE conditions of a scope and period (on ``spec.table`` only). Raises
    :class:`InvalidPeriod`, :class:`UserNotFound`."""
    for name, bound in (("since", since), ("until", until)):
        if bound is not None and bound.tzinfo is None:
            raise InvalidPeriod(f"{name} needs a time zone (UTC ISO 8601, e.g. …T00:00:00Z)")
    if since is not None and until is not None and since >= until:
        raise InvalidPeriod(
            f"the period is empty: from {since.isoformat()} is not before to {until.isoformat()}"
        )
    table = spec.table
    found: list[ColumnElement[bool]] = []
    if since is not None:
        found.append(table.c.created_at >= since)
    if until is not None:
        found.append(table.c.created_at < until)
    if user_id is None:
        return found
    conn = session.connection()
    if conn.execute(select(users.c.id).where(users.c.id == user_id)).first() is None:
        raise UserNotFound(f"no user {user_id}", user_id=user_id)
    if spec.by_accounts:
        ids = sorted(
            int(i)
            for i in conn.execute(
                select(accounts.c.id).where(
                    accounts.c.owner_id == user_id,
                    accounts.c.code.in_([c.value for c in USER_ACCOUNT_CODES]),
                )
            ).scalars()
        )
        found.append(
            or_(table.c.debit_account_id.in_(ids), table.c.credit_account_id.in_(ids))
            if ids
            else false()
        )
    else:
        assert spec.user_column is not None
        found.append(table.c[spec.user_column] == user_id)
    return found


def count(
    session: Session,
    kind: ExportKind | str,
    *,
    user_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """How many rows :func:`export_csv` would write now (to size a progress bar). Raises
    :class:`UnknownExportKind`, :class:`InvalidPeriod`, :class:`UserNotFound`."""
    spec = _SPECS[parse_kind(kind)]
    where = _filters(session, spec, user_id, since, until)
    query = select(func.count()).select_from(spec.table).where(*where)
    return int(session.connection().execute(query).scalar_one())


# ------------------------------------------------------------------ streaming


def export_csv(
    read: Callable[[], AbstractContextManager[Session]],
    kind: ExportKind | str,
    *,
    user_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page_size: int = PAGE_SIZE,
    on_page: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """CSV text chunks of ``kind``: the header, then one chunk per page of up to
    ``page_size`` rows in id order, each page read in its own short transaction (``read``
    opens one). ``user_id`` None exports every user's rows (admins only; the caller checks);
    ``created_at`` in ``[since, until)``. ``on_page(n)`` is called after each page's chunk is
    produced with its number of rows (a progress bar).

    Validates before returning, so nothing has been yielded when it raises
    :class:`UnknownExportKind`, :class:`InvalidPeriod` or :class:`UserNotFound`.
    """
    spec = _SPECS[parse_kind(kind)]
    if page_size < 1:
        raise InvalidInput(f"page_size must be at least 1, got {page_size}")
    with read() as session:
        where = _filters(session, spec, user_id, since, until)
    return _stream(read, spec, where, page_size, on_page)


def _stream(
    read: Callable[[], AbstractContextManager[Session]],
    spec: _Spec,
    where: list[ColumnElement[bool]],
    page_size: int,
    on_page: Callable[[int], None] | None,
) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(c.name for c in spec.columns)
    yield buffer.getvalue()
    # Only the columns that need it are converted: most cells go to the csv module as read.
    shows = [(i, c.show) for i, c in enumerate(spec.columns) if c.show is not None]
    key = spec.table.c.id
    assert spec.columns[0].expr is key, "the first column is the page key"
    query = (
        select(*(c.expr.label(c.name) for c in spec.columns))
        .select_from(spec.source)
        .where(*where)
        .order_by(key)
        .limit(page_size)
    )
    after = 0
    while True:
        with read() as session:
            page = session.connection().execute(query.where(key > after)).all()
        if not page:
            return
        buffer.seek(0)
        buffer.truncate()
        for row in page:
            cells = list(row)
            for i, show in shows:
                cells[i] = show(cells[i])
            writer.writerow(cells)
        yield buffer.getvalue()
        if on_page is not None:
            on_page(len(page))
        after = int(page[-1][0])
        if len(page) < page_size:
            return
