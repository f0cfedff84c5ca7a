"""The charging pipeline (DESIGN §6): price → debit the wallet → credit revenue → pay
creator earnings → write the usage row, all in the caller's transaction.

:func:`charge_batch` is the one implementation; :func:`charge` is a batch of one that raises
instead of reporting. Per batch, whatever its size, the pipeline runs a fixed number of
queries (idempotency lookup, accounts, models, prices, earnings terms, one insert per table,
one totals update per account) — DESIGN §16: per-event round trips are the main cost.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.orm import Session

from modelbank.analytics import rollups
from modelbank.catalog import access
from modelbank.catalog import service as catalog
from modelbank.catalog.errors import AccessRequired, ModelNotFound
from modelbank.db.base import utcnow
from modelbank.db.bulk import BulkInsert, db_json, db_timestamp
from modelbank.earnings import service as earnings
from modelbank.earnings.rules import BPS, popularity_multiplier, type_multiplier
from modelbank.errors import DomainError, IdempotencyConflict
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.ledger.errors import (
    HoldAmountExceeded,
    HoldExpired,
    HoldNotPending,
    InsufficientFunds,
    TransferNotFound,
)
from modelbank.metering.errors import BatchTooLarge, InvalidUsage, UsageNotFound
from modelbank.metering.models import usage_events_table as usage
from modelbank.money import TOKENS_PER_MTOK, div_half_even
from modelbank.pricing import service as pricing
from modelbank.pricing.errors import NoPrice
from modelbank.pricing.formulas import Rates
from modelbank.users.errors import UserNotFound
from modelbank.wallets import alerts, grants

MAX_BATCH_EVENTS = 1_000
"""Events per batch: keeps one transaction's lock time and memory bounded (and the
``IN (…)`` lists under every backend's parameter limit)."""
MAX_KEY_LENGTH = 200
"""Idempotency keys are at most 200 characters (the column width)."""
METADATA_TEXT_LIMIT = 100
"""DESIGN §6: prompts and other strings in metadata are truncated to 100 characters."""

_FIND_KEYS = select(
    usage.c.id,
    usage.c.idempotency_key,
    usage.c.request_hash,
    usage.c.model_id,
    usage.c.charge_ucr,
    usage.c.cost_uusd,
    usage.c.balance_after_ucr,
    usage.c.price_version_id,
).where(usage.c.idempotency_key.in_(bindparam("keys", expanding=True)))


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One model call to charge. Tokens and units are counts ≥ 0; ``cached_input_tokens`` is
    the part of ``input_tokens`` read from the provider's prompt cache. ``occurred_at`` None
    means now (and is then not part of the idempotency fingerprint)."""

    idempotency_key: str
    user_id: int
    model: int | str
    usage_type: str = "chat"
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    units: int = 0
    occurred_at: datetime | None = None
    metadata: Mapping[str, Any] | None = None
    charge_ucr: int | None = None
    """A fixed charge (µcr) instead of the price sheet's: a captured hold's amount."""
    hold_id: int | None = None
    """The pending hold this charge captures: it is posted for the charge and the rest is
    released (the wallet's available balance includes the held amount for it)."""


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """What happened to one event. ``status``: ``charged``, ``replayed`` (the key was seen
    with the same body: the first result again) or ``rejected`` (``error_code`` says why;
    nothing was written). Amounts in µcr, cost in µUSD; ``balance_ucr`` is the wallet's posted
    balance right after this charge."""

    idempotency_key: str
    status: str
    usage_id: int | None = None
    model_id: int | None = None
    charge_ucr: int = 0
    cost_uusd: int = 0
    earnings: tuple[tuple[int, int], ...] = ()
    balance_ucr: int | None = None
    price_version_id: int | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def earnings_ucr(self) -> int:
        """Total creator earnings paid for this event (µcr)."""
        return sum(amount for _, amount in self.earnings)


def request_hash(event: UsageEvent) -> str:
    """SHA-256 of the event's canonical body (everything but the key), hex."""
    user_id, model, usage_type = event.user_id, event.model, event.usage_type
    if (
        not event.metadata
        and event.charge_ucr is None
        and event.hold_id is None
        and type(user_id) is int
        and type(usage_type) is str
        and (type(model) is int or type(model) is str)
        and type(event.input_tokens) is int
        and type(event.output_tokens) is int
        and type(event.cached_input_tokens) is int
        and type(event.units) is int
    ):
        # The common case, rendered directly: the same text as _canonical_body, without
        # building a dict and running the generic encoder for each event.
        occurred = event.occurred_at
        canonical = (
            f'{{"cached_input_tokens":{event.cached_input_tokens},'
            f'"input_tokens":{event.input_tokens},"metadata":null,'
            f'"model":{model if isinstance(model, int) else _json_str(model)},'
            f'"occurred_at":{"null" if occurred is None else _json_str(occurred.isoformat())},'
            f'"output_tokens":{event.output_tokens},"units":{event.units},'
            f'"usage_type":{_json_str(usage_type)},"user_id":{user_id}}}'
        )
    else:
        canonical = _canonical_body(event)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _canonical_body(event: UsageEvent) -> str:
    """The body :func:`request_hash` hashes: sorted-key compact JSON, strings escaped to
    ASCII. Stored hashes depend on this text: never change it."""
    body = {
        "user_id": event.user_id,
        "model": event.model,
        "usage_type": event.usage_type,
        "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens,
        "cached_input_tokens": event.cached_input_tokens,
        "units": event.units,
        "occurred_at": event.occurred_at.isoformat() if event.occurred_at else None,
        "metadata": _clean_metadata(event.metadata),
    }
    # Added only when set, so that the hashes of ordinary events stay as they were.
    if event.charge_ucr is not None:
        body["charge_ucr"] = event.charge_ucr
    if event.hold_id is not None:
        body["hold_id"] = event.hold_id
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)


_json_str = json.encoder.encode_basestring_ascii
"""A str as JSON text, exactly as ``json.dumps`` writes it (ensure_ascii)."""


def validate(event: UsageEvent) -> None:
    """Raise :class:`InvalidUsage` for a bad key, negative counts, cached > input, an
    empty usage type or a naive ``occurred_at``."""
    if not event.idempotency_key or len(event.idempotency_key) > MAX_KEY_LENGTH:
        raise InvalidUsage("idempotency_key must be 1–200 characters")
    for name in ("input_tokens", "output_tokens", "cached_input_tokens", "units"):
        value = getattr(event, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidUsage(f"{name} must be an integer ≥ 0, got {value!r}")
    if event.cached_input_tokens > event.input_tokens:
        raise InvalidUsage("cached_input_tokens cannot exceed input_tokens")
    if not event.usage_type or len(event.usage_type) > 32:
        raise InvalidUsage("usage_type must be 1–32 characters")
    if event.occurred_at is not None and event.occurred_at.tzinfo is None:
        raise InvalidUsage("occurred_at must carry a time zone")
    fixed = event.charge_ucr
    if fixed is not None and (not isinstance(fixed, int) or isinstance(fixed, bool) or fixed < 0):
        raise InvalidUsage(f"charge_ucr must be an integer ≥ 0, got {fixed!r}")


def charge(session: Session, event: UsageEvent, *, now: datetime | None = None) -> ChargeResult:
    """Charge one usage event (DESIGN §6) in the caller's transaction.

    Returns a ``charged`` or ``replayed`` :class:`ChargeResult`. Raises, writing nothing:
    :class:`InvalidUsage`, :class:`~modelbank.ledger.errors.InsufficientFunds`,
    :class:`~modelbank.errors.IdempotencyConflict` (key reused with another body),
    :class:`~modelbank.catalog.errors.ModelNotFound`, :class:`~modelbank.pricing.errors.NoPrice`,
    :class:`~modelbank.users.errors.UserNotFound`,
    :class:`~modelbank.catalog.errors.AccessRequired` (a premium model without bought access).
    """
    return charge_batch_with_errors(session, [event], now=now, raise_errors=True)[0][0]


def charge_batch(
    session: Session,
    events: Sequence[UsageEvent],
    *,
    now: datetime | None = None,
    _raise: bool = False,
) -> list[ChargeResult]:
    """Charge up to 1,000 events in the caller's transaction; one result per event, in order.

    Each event is independent: a rejected one (``invalid_usage``, ``insufficient_funds``,
    ``model_not_found``, ``no_price``, ``user_not_found``, ``idempotency_key_reused``,
    ``model_access_required``) writes
    nothing and does not stop the others. Events are charged in order, so a wallet that runs
    dry rejects its later events. A key repeated inside the batch replays the first.
    Raises :class:`BatchTooLarge`.
    """
    return charge_batch_with_errors(session, events, now=now, raise_errors=_raise)[0]


def charge_batch_with_errors(
    session: Session,
    events: Sequence[UsageEvent],
    *,
    now: datetime | None = None,
    raise_errors: bool = False,
) -> tuple[list[ChargeResult], list[DomainError | None]]:
    """:func:`charge_batch` that also returns, for each ``rejected`` result, the
    :class:`~modelbank.errors.DomainError` that rejected it (None for the others), so that a
    caller charging on behalf of others (:mod:`modelbank.metering.group`) can raise what
    :func:`charge` would. With ``raise_errors`` the first rejection is raised instead.
    Raises :class:`BatchTooLarge`.
    """
    if len(events) > MAX_BATCH_EVENTS:
        raise BatchTooLarge(f"at most {MAX_BATCH_EVENTS} events per batch, got {len(events)}")
    now = now or utcnow()
    count = len(events)
    results: list[ChargeResult | None] = [None] * count
    errors: list[DomainError | None] = [None] * count
    hashes: list[str] = [""] * count

    def reject(i: int, exc: DomainError) -> None:
        if raise_errors:
            raise exc
        errors[i] = exc
        results[i] = ChargeResult(
            idempotency_key=events[i].idempotency_key,
            status="rejected",
            error_code=exc.code,
            error_message=str(exc),
        )

    for i, event in enumerate(events):
        try:
            validate(event)
            hashes[i] = request_hash(event)
        except DomainError as exc:
            reject(i, exc)

    # Lock the wallets first, then look the keys up: a concurrent retry of the same event
    # waits on the wallet lock and then finds the first one's row (PostgreSQL; SQLite
    # serialises writers with BEGIN IMMEDIATE anyway). One query finds and locks them.
    by_user = ledger.lock_user_accounts(
        session,
        (e.user_id for e, r in zip(events, results, strict=True) if r is None),
        AccountCode.USER_WALLET,
    )
    wallets = {user_id: account.id for user_id, account in by_user.items()}
    locked = {account.id: account for account in by_user.values()}
    _replay_known(session, events, hashes, results, reject)

    pending = [i for i, r in enumerate(results) if r is None]
    if not pending:
        return [r for r in results if r is not None], errors

    # Expired grants of these wallets are swept first, so an expired credit is never spent.
    book = grants.GrantBook.load(
        session,
        {
            events[i].user_id: by_user[events[i].user_id]
            for i in pending
            if events[i].user_id in by_user
        },
        now=now,
    )
    holds = _holds(session, events, pending)
    models = catalog.resolve_models(session, {events[i].model for i in pending})
    model_ids = {info.id for info in models.values()}
    # Premium models need bought access (or to be the creator's): one query, and only when
    # a premium model is in the batch.
    blocked = access.missing_access(
        session,
        (
            (events[i].user_id, models[events[i].model])
            for i in pending
            if events[i].model in models
        ),
    )
    prices = pricing.current_prices(session, model_ids, at=now)
    priced = {model_id: _priced(price) for model_id, price in prices.items()}
    terms = earnings.load_terms(
        session, {info.id: info.creator_id for info in models.values()}, at=now
    )
    payers = {model_id: _Payer(term) for model_id, term in terms.items()}
    monetised_platform = earnings.platform_monetised(session)
    beneficiary_ids = {user for t in terms.values() for user, _ in t.beneficiaries}
    earning_accounts = ledger.user_account_ids(session, beneficiary_ids, AccountCode.USER_EARNINGS)
    revenue_account = ledger.platform_account(session, AccountCode.PLATFORM_REVENUE)
    dialect = session.get_bind().dialect.name
    now_db = db_timestamp(dialect, now)

    rows: list[tuple[Any, ...]] = []  # usage rows, without their id
    row_info: list[_RowInfo] = []
    stats: dict[int, earnings.StatsDelta] = {}
    first_row_of_key: dict[str, int] = {}
    spent: dict[int, int] = {}
    uses: dict[int, int] = {}
    for i in pending:
        event = events[i]
        key = event.idempotency_key
        if key in first_row_of_key:
            continue  # resolved after insert: a replay (or conflict) of an earlier event
        user_id = event.user_id
        wallet = wallets.get(user_id)
        if wallet is None:
            reject(i, UserNotFound(f"no user {user_id}", user_id=user_id))
            continue
        info = models.get(event.model)
        if info is None:
            reject(i, ModelNotFound(f"no active model {event.model!r}", model=event.model))
            continue
        model_id = info.id
        if blocked and (user_id, model_id) in blocked:
            reject(
                i,
                AccessRequired(
                    f"model {info.slug!r} is premium: buy access first",
                    model_id=model_id,
                    access_price_ucr=info.access_price_ucr,
                ),
            )
            continue
        price = priced.get(model_id)
        if price is None:
            reject(i, NoPrice(f"model {info.slug!r} has no price in force", model_id=model_id))
            continue
        input_tokens = event.input_tokens
        cached = event.cached_input_tokens
        output_tokens = event.output_tokens
        units = event.units
        fresh = input_tokens - cached
        card = price.charge
        charge_ucr = (
            div_half_even(
                fresh * card.fresh
                + cached * card.cached
                + output_tokens * card.output
                + card.request
                + units * card.unit,
                card.den,
            )
            if event.charge_ucr is None
            else event.charge_ucr
        )
        account = locked[wallet]
        available = account.available - spent.get(wallet, 0)
        if event.hold_id is not None:
            hold = holds[event.hold_id]
            problem = _hold_problem(hold, wallet, charge_ucr, now)
            if problem is not None:
                reject(i, problem)
                continue
            available += hold.amount  # posting the hold releases what it reserved
        if charge_ucr > available:
            reject(
                i,
                InsufficientFunds(
                    f"wallet of user {user_id} has {available} µcr available,"
                    f" {charge_ucr} µcr needed",
                    account_id=wallet,
                    available_ucr=available,
                    needed_ucr=charge_ucr,
                ),
            )
            continue

        spent_now = spent[wallet] = spent.get(wallet, 0) + charge_ucr
        payer = payers[model_id]
        used = uses.get(model_id, 0)
        uses[model_id] = used + 1
        tokens = input_tokens + output_tokens
        note: str | None = None
        paid: tuple[tuple[int, int], ...] = ()
        factors: tuple[str, str] | None = None
        if not payer.beneficiaries:
            note = "no_creator"
        elif not monetised_platform:
            note = "monetisation_off_platform"
        elif not info.monetised:
            note = "monetisation_off"
        else:
            paid, factors = payer.pay(
                tokens=tokens,
                charge_ucr=charge_ucr,
                prior_uses=payer.use_count + used,
                usage_type=event.usage_type,
                payer_id=user_id,
            )
            if not paid:
                own = any(user == user_id for user, _ in payer.beneficiaries)
                note = "self_usage" if own else "zero"
        earned = sum(a for _, a in paid)
        cost = price.cost
        cost_num = (
            fresh * cost.fresh
            + cached * cost.cached
            + output_tokens * cost.output
            + cost.request
            + units * cost.unit
        )
        cost_uusd = div_half_even(cost_num, cost.den)
        margin = (
            charge_ucr - div_half_even(cost_num * price.cpu_num, cost.den * price.cpu_den) - earned
        )
        delta = stats.get(model_id)
        if delta is None:
            delta = stats[model_id] = earnings.StatsDelta()
        delta.uses += 1
        delta.tokens += tokens
        delta.revenue_ucr += charge_ucr
        delta.earnings_ucr += earned
        occurred = event.occurred_at
        if occurred is None:
            occurred, occurred_db = now, now_db
        else:
            occurred_db = db_timestamp(dialect, occurred)
        if delta.last_used_at is None or occurred > delta.last_used_at:
            delta.last_used_at = occurred
        first_row_of_key[key] = len(rows)
        rows.append(
            (
                key,
                hashes[i],
                user_id,
                model_id,
                price.info.id,
                event.usage_type,
                input_tokens,
                cached,
                output_tokens,
                units,
                charge_ucr,
                cost_uusd,
                earned,
                margin,
                account.balance - spent_now,
                note,
                occurred_db,
                now_db,
                db_json(_clean_metadata(event.metadata)) if event.metadata else None,
            )
        )
        row_info.append((i, wallet, paid, model_id, charge_ucr, tokens, factors))

    if rows:
        _write(
            session,
            rows,
            row_info,
            events,
            results,
            stats,
            earning_accounts=earning_accounts,
            revenue_account=revenue_account,
            locked=locked,
            book=book,
            payers=payers,
            now=now,
        )
        alerts.check(session, {events[info[0]].user_id for info in row_info}, now=now)
    else:
        book.flush(session, now=now)  # expired grants swept while loading

    # Keys repeated inside the batch: replay the first occurrence (or conflict).
    for i in pending:
        if results[i] is not None:
            continue
        event = events[i]
        row_index = first_row_of_key.get(event.idempotency_key)
        first = results[row_info[row_index][0]] if row_index is not None else None
        if first is None or row_index is None:
            reject(i, DomainError("the first event with this key was rejected"))
        elif rows[row_index][1] != hashes[i]:
            reject(i, _conflict(event))
        else:
            results[i] = _as_replay(first)
    return [r for r in results if r is not None], errors


_USAGE_COLUMNS = (
    "id",
    "idempotency_key",
    "request_hash",
    "user_id",
    "model_id",
    "price_version_id",
    "usage_type",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "units",
    "charge_ucr",
    "cost_uusd",
    "earnings_ucr",
    "margin_ucr",
    "balance_after_ucr",
    "earnings_note",
    "occurred_at",
    "created_at",
    "metadata",
)
_INSERT_USAGE = BulkInsert(usage, _USAGE_COLUMNS)
_MAX_USAGE_ID = select(func.coalesce(func.max(usage.c.id), 0))
_NEXT_USAGE_IDS_PG = text(
    f"SELECT nextval(pg_get_serial_sequence('{usage.name}', 'id')) FROM generate_series(1, :n)"
)


def _usage_ids(session: Session, count: int) -> list[int]:
    """``count`` new usage ids, ascending. PostgreSQL: from the table's sequence. SQLite:
    after the largest id, which is safe because the transaction holds the writer lock
    (BEGIN IMMEDIATE, :mod:`modelbank.db.engine`) until it commits."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        return sorted(int(v) for v in conn.execute(_NEXT_USAGE_IDS_PG, {"n": count}).scalars())
    top = int(conn.execute(_MAX_USAGE_ID).scalar_one())
    return list(range(top + 1, top + 1 + count))


def _write(
    session: Session,
    rows: list[tuple[Any, ...]],
    row_info: list[_RowInfo],
    events: Sequence[UsageEvent],
    results: list[ChargeResult | None],
    stats: Mapping[int, earnings.StatsDelta],
    *,
    earning_accounts: Mapping[int, int],
    revenue_account: int,
    locked: Mapping[int, ledger.AccountBalance],
    book: grants.GrantBook,
    payers: Mapping[int, _Payer],
    now: datetime,
) -> None:
    ids = _usage_ids(session, len(rows))
    _INSERT_USAGE.execute(
        session.connection(), [(usage_id, *row) for usage_id, row in zip(ids, rows, strict=True)]
    )
    transfers: list[ledger.LinkedRow] = []
    lines: list[earnings.EarningRow] = []
    facts: list[rollups.ChargeFact] = []
    for usage_id, (i, wallet, paid, model_id, charge_ucr, tokens, factors), row in zip(
        ids, row_info, rows, strict=True
    ):
        facts.append(
            rollups.ChargeFact(
                user_id=events[i].user_id,
                model_id=model_id,
                usage_type=events[i].usage_type,
                tokens=tokens,
                charge_ucr=charge_ucr,
                cost_uusd=row[11],
                earnings=paid,
            )
        )
        hold_id = events[i].hold_id
        if hold_id is not None:
            # A captured hold: post it for the charge (releasing the rest), or void it.
            if charge_ucr > 0:
                ledger.post_hold(
                    session, hold_id, charge_ucr, now=now, ref=("usage", usage_id), locked=locked
                )
            else:
                ledger.void_hold(session, hold_id, now=now, reason="captured_zero")
        elif charge_ucr > 0:
            transfers.append((wallet, revenue_account, charge_ucr, _USAGE_CHARGE, usage_id))
        if charge_ucr > 0:
            book.burn(events[i].user_id, charge_ucr, "usage", usage_id, now=now)
        if paid:
            assert factors is not None
            payer = payers[model_id]
            for user_id, earned in paid:
                transfers.append(
                    (revenue_account, earning_accounts[user_id], earned, _EARNING, usage_id)
                )
                lines.append(
                    (
                        usage_id,
                        model_id,
                        user_id,
                        earned,
                        tokens,
                        payer.rule_version,
                        factors[0],
                        factors[1],
                        payer.shares[user_id],
                    )
                )
    ledger.post_linked(
        session,
        transfers,
        ref_type="usage",
        now=now,
        locked=locked,
        existing=[revenue_account, *earning_accounts.values()],
    )
    book.flush(session, now=now)
    earnings.record_rows(session, lines, stats, now=now)
    rollups.record_charges(session, facts, now=now)
    for usage_id, row, (i, _, paid, model_id, charge_ucr, _, _) in zip(
        ids, rows, row_info, strict=True
    ):
        results[i] = ChargeResult(
            idempotency_key=events[i].idempotency_key,
            status="charged",
            usage_id=usage_id,
            model_id=model_id,
            charge_ucr=charge_ucr,
            cost_uusd=row[11],
            earnings=paid,
            balance_ucr=row[14],
            price_version_id=row[4],
        )


_USAGE_CHARGE = TransferCode.USAGE_CHARGE.value
_EARNING = TransferCode.EARNING.value


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """A charged usage event as stored: µcr charged and paid to creators, µUSD cost."""

    id: int
    idempotency_key: str
    user_id: int
    model_id: int
    price_version_id: int
    usage_type: str
    input_tokens: int
    output_tokens: int
    charge_ucr: int
    cost_uusd: int
    earnings_ucr: int
    occurred_at: datetime
    created_at: datetime
    earnings_note: str | None = None
    """Why nothing (or less) was earned: no_creator, self_usage, zero, monetisation_off, …"""


def get_usage(session: Session, usage_id: int) -> UsageRecord:
    """The usage event ``usage_id``. Raises :class:`UsageNotFound`."""
    row = session.connection().execute(select(usage).where(usage.c.id == usage_id)).first()
    if row is None:
        raise UsageNotFound(f"no usage event {usage_id}", usage_id=usage_id)
    return UsageRecord(
        id=int(row.id),
        idempotency_key=row.idempotency_key,
        user_id=int(row.user_id),
        model_id=int(row.model_id),
        price_version_id=int(row.price_version_id),
        usage_type=row.usage_type,
        input_tokens=int(row.input_tokens),
        output_tokens=int(row.output_tokens),
        charge_ucr=int(row.charge_ucr),
        cost_uusd=int(row.cost_uusd),
        earnings_ucr=int(row.earnings_ucr),
        occurred_at=row.occurred_at,
        created_at=row.created_at,
        earnings_note=row.earnings_note,
    )


def _holds(
    session: Session, events: Sequence[UsageEvent], pending: Sequence[int]
) -> dict[int, ledger.Hold]:
    """The holds the pending events capture (rare: one query each)."""
    found: dict[int, ledger.Hold] = {}
    for i in pending:
        hold_id = events[i].hold_id
        if hold_id is not None and hold_id not in found:
            try:
                found[hold_id] = ledger.get_hold(session, hold_id)
            except TransferNotFound:
                continue
    return found


def _hold_problem(
    hold: ledger.Hold | None, wallet: int, charge_ucr: int, now: datetime
) -> DomainError | None:
    """Why a capture of ``hold`` for ``charge_ucr`` µcr from ``wallet`` cannot go on."""
    if hold is None or hold.debit_account_id != wallet:
        return InvalidUsage("no such hold on this user's wallet")
    if hold.status != "pending":
        return HoldNotPending(f"hold {hold.id} is already {hold.status}", status=hold.status)
    if hold.expires_at is not None and hold.expires_at <= now:
        return HoldExpired(f"hold {hold.id} expired at {hold.expires_at.isoformat()}")
    if charge_ucr > hold.amount:
        return HoldAmountExceeded(
            f"cannot capture {charge_ucr} µcr of a {hold.amount} µcr hold",
            held_ucr=hold.amount,
            amount_ucr=charge_ucr,
        )
    return None


@dataclass(frozen=True, slots=True)
class _Card:
    """A rate card as integers over one denominator: the exact amount of a usage is
    ``(fresh × fresh_rate + cached × cached + output × output + request + units × unit)
    / den`` (as :func:`~modelbank.pricing.formulas.amount`, one request per event)."""

    fresh: int
    cached: int
    output: int
    request: int
    unit: int
    den: int

    @staticmethod
    def of(rates: Rates) -> _Card:
        cache_rate = (
            rates.input_per_mtok if rates.cache_read_per_mtok is None else rates.cache_read_per_mtok
        )
        parts = [
            _per_token(rates.input_per_mtok),
            _per_token(cache_rate),
            _per_token(rates.output_per_mtok),
            rates.per_request.as_integer_ratio(),
            rates.per_unit.as_integer_ratio(),
        ]
        den = math.lcm(*(d for _, d in parts))
        fresh, cached, output, request, unit = (n * (den // d) for n, d in parts)
        return _Card(fresh, cached, output, request, unit, den)


def _per_token(rate_per_mtok: Decimal) -> tuple[int, int]:
    numerator, denominator = rate_per_mtok.as_integer_ratio()
    return numerator, denominator * TOKENS_PER_MTOK


@dataclass(frozen=True, slots=True)
class _Priced:
    """A price version with its charge (µcr) and cost (µUSD) cards and credits per USD."""

    info: pricing.PriceInfo
    charge: _Card
    cost: _Card
    cpu_num: int
    cpu_den: int


_PRICED_CACHE: dict[pricing.PriceInfo, _Priced] = {}
"""Price version → its integer cards (versions are immutable; keyed by content)."""


def _priced(info: pricing.PriceInfo) -> _Priced:
    found = _PRICED_CACHE.get(info)
    if found is None:
        if len(_PRICED_CACHE) >= 4096:
            _PRICED_CACHE.clear()
        cpu_num, cpu_den = info.credits_per_usd.as_integer_ratio()
        found = _PRICED_CACHE[info] = _Priced(
            info, _Card.of(info.price_ucr), _Card.of(info.cost_uusd), cpu_num, cpu_den
        )
    return found


class _Payer:
    """One model's earnings terms for a batch, in integers. The pool of an event is DESIGN
    §7's ``(per_use + tokens × per_token + share_bps × charge / 10000) × popularity × type``,
    rounded half-even once (as :func:`~modelbank.earnings.rules.earnings_exact`); each
    beneficiary other than the payer gets ``⌊pool × stake_bps / 10000⌋`` (as
    :func:`~modelbank.earnings.rules.split`): the parts never exceed the pool, and what is
    left (rounding, the payer's own stake) stays with the platform."""

    __slots__ = (
        "_multipliers",
        "_rule",
        "_token_den",
        "_token_num",
        "beneficiaries",
        "rule_version",
        "shares",
        "use_count",
    )

    def __init__(self, term: earnings.Terms) -> None:
        self._rule = term.rule
        self.rule_version = term.rule.version
        self.beneficiaries = term.beneficiaries
        self.shares = dict(term.beneficiaries)
        self.use_count = term.use_count
        self._token_num, self._token_den = term.rule.per_token_ucr.as_integer_ratio()
        self._multipliers: dict[tuple[Decimal, Decimal], tuple[int, int, str, str]] = {}

    def pay(
        self, *, tokens: int, charge_ucr: int, prior_uses: int, usage_type: str, payer_id: int
    ) -> tuple[tuple[tuple[int, int], ...], tuple[str, str]]:
        """The parts paid ((user id, µcr) > 0) and the (popularity, type) multipliers used."""
        rule = self._rule
        factors = (popularity_multiplier(rule, prior_uses), type_multiplier(rule, usage_type))
        multiplier = self._multipliers.get(factors)
        if multiplier is None:
            pop_num, pop_den = factors[0].as_integer_ratio()
            type_num, type_den = factors[1].as_integer_ratio()
            multiplier = self._multipliers[factors] = (
                pop_num * type_num,
                pop_den * type_den,
                str(factors[0]),
                str(factors[1]),
            )
        token_den = self._token_den
        numerator = (
            (rule.per_use_ucr * token_den + tokens * self._token_num) * BPS
            + rule.share_bps * charge_ucr * token_den
        ) * multiplier[0]
        pool = div_half_even(numerator, token_den * BPS * multiplier[1])
        paid: list[tuple[int, int]] = []
        for user_id, share_bps in self.beneficiaries:
            if user_id == payer_id or share_bps <= 0:
                continue
            part = pool * share_bps // BPS
            if part > 0:
                paid.append((user_id, part))
        return tuple(paid), (multiplier[2], multiplier[3])


_RowInfo = tuple[int, int, tuple[tuple[int, int], ...], int, int, int, tuple[str, str] | None]
"""Per usage row: (event index, wallet account, earnings paid, model id, charge µcr, tokens,
(popularity, type) multipliers or None when nothing was computed)."""


def _replay_known(
    session: Session,
    events: Sequence[UsageEvent],
    hashes: list[str],
    results: list[ChargeResult | None],
    reject: Callable[[int, DomainError], None],
) -> None:
    keys = {events[i].idempotency_key for i, r in enumerate(results) if r is None}
    if not keys:
        return
    rows = {
        row.idempotency_key: row
        for row in session.connection().execute(_FIND_KEYS, {"keys": list(keys)})
    }
    if not rows:
        return
    paid = earnings.earnings_by_usage(session, (int(row.id) for row in rows.values()))
    for i, event in enumerate(events):
        row = rows.get(event.idempotency_key)
        if results[i] is not None or row is None:
            continue
        if row.request_hash != hashes[i]:
            reject(i, _conflict(event))
            continue
        results[i] = ChargeResult(
            idempotency_key=event.idempotency_key,
            status="replayed",
            usage_id=int(row.id),
            model_id=int(row.model_id),
            charge_ucr=int(row.charge_ucr),
            cost_uusd=int(row.cost_uusd),
            earnings=tuple(paid.get(int(row.id), [])),
            balance_ucr=int(row.balance_after_ucr),
            price_version_id=int(row.price_version_id),
        )


def _conflict(event: UsageEvent) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"idempotency key {event.idempotency_key!r} was used with a different usage event",
        idempotency_key=event.idempotency_key,
    )


def _as_replay(first: ChargeResult) -> ChargeResult:
    return ChargeResult(
        idempotency_key=first.idempotency_key,
        status="replayed",
        usage_id=first.usage_id,
        model_id=first.model_id,
        charge_ucr=first.charge_ucr,
        cost_uusd=first.cost_uusd,
        earnings=first.earnings,
        balance_ucr=first.balance_ucr,
        price_version_id=first.price_version_id,
    )


def _clean_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Truncate strings to 100 characters (DESIGN §6); drop keys that look like secrets."""
    if not metadata:
        return None
    cleaned: dict[str, Any] = {}
    for key, value in metadata.items():
        lowered = str(key).lower()
        if any(word in lowered for word in ("key", "secret", "token", "password")):
            continue
        if isinstance(value, str):
            value = value[:METADATA_TEXT_LIMIT]
        elif not isinstance(value, int | bool | Decimal | None):
            value = str(value)[:METADATA_TEXT_LIMIT]
        cleaned[str(key)] = str(value) if isinstance(value, Decimal) else value
    return cleaned or None
