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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from modelbank.catalog import service as catalog
from modelbank.catalog.errors import ModelNotFound
from modelbank.db.base import utcnow
from modelbank.earnings import service as earnings
from modelbank.earnings.rules import earnings_exact, split
from modelbank.errors import DomainError, IdempotencyConflict
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.ledger.errors import InsufficientFunds
from modelbank.metering.errors import BatchTooLarge, InvalidUsage
from modelbank.metering.models import usage_events_table as usage
from modelbank.money import round_ucr, round_uusd, uusd_to_ucr
from modelbank.pricing import service as pricing
from modelbank.pricing.errors import NoPrice
from modelbank.pricing.formulas import Quantities, amount
from modelbank.users.errors import UserNotFound

MAX_BATCH_EVENTS = 1_000
"""Events per batch: keeps one transaction's lock time and memory bounded (and the
``IN (…)`` lists under every backend's parameter limit)."""
MAX_KEY_LENGTH = 200
"""Idempotency keys are at most 200 characters (the column width)."""
METADATA_TEXT_LIMIT = 100
"""DESIGN §6: prompts and other strings in metadata are truncated to 100 characters."""

_INSERT_USAGE = insert(usage).returning(usage.c.id, usage.c.idempotency_key)
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


@dataclass
class _Batch:
    rows: list[dict[str, Any]] = field(default_factory=list)
    row_results: list[int] = field(default_factory=list)  # result index of each row
    wallets: list[int] = field(default_factory=list)
    paid: list[list[tuple[int, int]]] = field(default_factory=list)
    stats: dict[int, earnings.StatsDelta] = field(default_factory=dict)


def request_hash(event: UsageEvent) -> str:
    """SHA-256 of the event's canonical body (everything but the key), hex."""
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
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


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


def charge(session: Session, event: UsageEvent, *, now: datetime | None = None) -> ChargeResult:
    """Charge one usage event (DESIGN §6) in the caller's transaction.

    Returns a ``charged`` or ``replayed`` :class:`ChargeResult`. Raises, writing nothing:
    :class:`InvalidUsage`, :class:`~modelbank.ledger.errors.InsufficientFunds`,
    :class:`~modelbank.errors.IdempotencyConflict` (key reused with another body),
    :class:`~modelbank.catalog.errors.ModelNotFound`, :class:`~modelbank.pricing.errors.NoPrice`,
    :class:`~modelbank.users.errors.UserNotFound`.
    """
    return charge_batch(session, [event], now=now, _raise=True)[0]


def charge_batch(
    session: Session,
    events: Sequence[UsageEvent],
    *,
    now: datetime | None = None,
    _raise: bool = False,
) -> list[ChargeResult]:
    """Charge up to 1,000 events in the caller's transaction; one result per event, in order.

    Each event is independent: a rejected one (``invalid_usage``, ``insufficient_funds``,
    ``model_not_found``, ``no_price``, ``user_not_found``, ``idempotency_key_reused``) writes
    nothing and does not stop the others. Events are charged in order, so a wallet that runs
    dry rejects its later events. A key repeated inside the batch replays the first.
    Raises :class:`BatchTooLarge`.
    """
    if len(events) > MAX_BATCH_EVENTS:
        raise BatchTooLarge(f"at most {MAX_BATCH_EVENTS} events per batch, got {len(events)}")
    now = now or utcnow()
    results: list[ChargeResult | None] = [None] * len(events)
    hashes: list[str] = [""] * len(events)
    for i, event in enumerate(events):
        try:
            validate(event)
            hashes[i] = request_hash(event)
        except DomainError as exc:
            results[i] = _rejected(event, exc, _raise)

    # Lock the wallets first, then look the keys up: a concurrent retry of the same event
    # waits on the wallet lock and then finds the first one's row (PostgreSQL; SQLite
    # serialises writers with BEGIN IMMEDIATE anyway).
    wallets = ledger.user_account_ids(
        session,
        (e.user_id for e, r in zip(events, results, strict=True) if r is None),
        AccountCode.USER_WALLET,
    )
    locked = ledger.lock_accounts(session, wallets.values())
    _replay_known(session, events, hashes, results, _raise)

    pending = [i for i, r in enumerate(results) if r is None]
    if not pending:
        return [r for r in results if r is not None]

    models = catalog.resolve_models(session, (events[i].model for i in pending))
    model_ids = {info.id for info in models.values()}
    prices = pricing.current_prices(session, model_ids, at=now)
    terms = earnings.load_terms(
        session, {info.id: info.creator_id for info in models.values()}, at=now
    )
    beneficiary_ids = {user for t in terms.values() for user, _ in t.beneficiaries}
    earning_accounts = ledger.user_account_ids(session, beneficiary_ids, AccountCode.USER_EARNINGS)
    revenue_account = ledger.platform_account(session, AccountCode.PLATFORM_REVENUE)

    batch = _Batch()
    first_row_of_key: dict[str, int] = {}
    spent: dict[int, int] = {}
    uses: dict[int, int] = {}
    for i in pending:
        event = events[i]
        if event.idempotency_key in first_row_of_key:
            continue  # resolved after insert: a replay (or conflict) of an earlier event
        try:
            wallet = wallets.get(event.user_id)
            if wallet is None:
                raise UserNotFound(f"no user {event.user_id}", user_id=event.user_id)
            info = models.get(event.model)
            if info is None:
                raise ModelNotFound(f"no active model {event.model!r}", model=event.model)
            price = prices.get(info.id)
            if price is None:
                raise NoPrice(f"model {info.slug!r} has no price in force", model_id=info.id)
            q = Quantities(
                input_tokens=event.input_tokens,
                output_tokens=event.output_tokens,
                cached_input_tokens=event.cached_input_tokens,
                units=event.units,
            )
            charge_ucr = round_ucr(amount(price.price_ucr, q))
            cost_exact = amount(price.cost_uusd, q)
            available = locked[wallet].available - spent.get(wallet, 0)
            if charge_ucr > available:
                raise InsufficientFunds(
                    f"wallet of user {event.user_id} has {available} µcr available,"
                    f" {charge_ucr} µcr needed",
                    account_id=wallet,
                    available_ucr=available,
                    needed_ucr=charge_ucr,
                )
        except DomainError as exc:
            results[i] = _rejected(event, exc, _raise)
            continue

        spent[wallet] = spent.get(wallet, 0) + charge_ucr
        term = terms[info.id]
        prior = term.use_count + uses.get(info.id, 0)
        uses[info.id] = uses.get(info.id, 0) + 1
        tokens = event.input_tokens + event.output_tokens
        note: str | None = None
        paid: list[tuple[int, int]] = []
        if not term.beneficiaries:
            note = "no_creator"
        else:
            exact = earnings_exact(
                term.rule,
                tokens=tokens,
                charge_ucr=charge_ucr,
                prior_uses=prior,
                usage_type=event.usage_type,
            )
            paid = split(exact, term.beneficiaries, payer_id=event.user_id)
            if not paid:
                own = any(user == event.user_id for user, _ in term.beneficiaries)
                note = "self_usage" if own else "zero"
        earned = sum(a for _, a in paid)
        cost_uusd = round_uusd(cost_exact)
        margin = charge_ucr - round_ucr(uusd_to_ucr(cost_exact, price.credits_per_usd)) - earned
        balance_after = locked[wallet].balance - spent[wallet]
        delta = batch.stats.get(info.id)
        if delta is None:
            delta = batch.stats[info.id] = earnings.StatsDelta()
        delta.uses += 1
        delta.tokens += tokens
        delta.revenue_ucr += charge_ucr
        delta.earnings_ucr += earned
        occurred = event.occurred_at or now
        if delta.last_used_at is None or occurred > delta.last_used_at:
            delta.last_used_at = occurred
        first_row_of_key[event.idempotency_key] = len(batch.rows)
        batch.rows.append(
            {
                "idempotency_key": event.idempotency_key,
                "request_hash": hashes[i],
                "user_id": event.user_id,
                "model_id": info.id,
                "price_version_id": price.id,
                "usage_type": event.usage_type,
                "input_tokens": event.input_tokens,
                "cached_input_tokens": event.cached_input_tokens,
                "output_tokens": event.output_tokens,
                "units": event.units,
                "charge_ucr": charge_ucr,
                "cost_uusd": cost_uusd,
                "earnings_ucr": earned,
                "margin_ucr": margin,
                "balance_after_ucr": balance_after,
                "earnings_note": note,
                "occurred_at": occurred,
                "created_at": now,
                "metadata": _clean_metadata(event.metadata),
            }
        )
        batch.row_results.append(i)
        batch.wallets.append(wallet)
        batch.paid.append(paid)

    if batch.rows:
        _write(session, batch, events, results, earning_accounts, revenue_account, locked, now)

    # Keys repeated inside the batch: replay the first occurrence (or conflict).
    for i in pending:
        if results[i] is not None:
            continue
        event = events[i]
        row_index = first_row_of_key.get(event.idempotency_key)
        first = results[batch.row_results[row_index]] if row_index is not None else None
        if first is None:
            results[i] = _rejected(
                event, DomainError("the first event with this key was rejected"), _raise
            )
        elif batch.rows[row_index]["request_hash"] != hashes[i]:  # type: ignore[index]
            results[i] = _rejected(event, _conflict(event), _raise)
        else:
            results[i] = _as_replay(first)
    return [r for r in results if r is not None]


def _write(
    session: Session,
    batch: _Batch,
    events: Sequence[UsageEvent],
    results: list[ChargeResult | None],
    earning_accounts: Mapping[int, int],
    revenue_account: int,
    locked: Mapping[int, ledger.AccountBalance],
    now: datetime,
) -> None:
    conn = session.connection()
    # Unordered RETURNING lets SQLAlchemy send one multi-row INSERT per batch (ordered
    # RETURNING falls back to one INSERT per row); ids are matched back by unique key.
    returned = conn.execute(_INSERT_USAGE, batch.rows)
    id_of_key = {row.idempotency_key: int(row.id) for row in returned}
    usage_ids = [id_of_key[row["idempotency_key"]] for row in batch.rows]
    transfers: list[ledger.NewTransfer] = []
    lines: list[earnings.EarningLine] = []
    for row, usage_id, wallet, paid in zip(
        batch.rows, usage_ids, batch.wallets, batch.paid, strict=True
    ):
        if row["charge_ucr"] > 0:
            transfers.append(
                ledger.NewTransfer(
                    debit_account_id=wallet,
                    credit_account_id=revenue_account,
                    amount=row["charge_ucr"],
                    code=TransferCode.USAGE_CHARGE,
                    ref_type="usage",
                    ref_id=usage_id,
                )
            )
        tokens = row["input_tokens"] + row["output_tokens"]
        for user_id, earned in paid:
            transfers.append(
                ledger.NewTransfer(
                    debit_account_id=revenue_account,
                    credit_account_id=earning_accounts[user_id],
                    amount=earned,
                    code=TransferCode.EARNING,
                    ref_type="usage",
                    ref_id=usage_id,
                )
            )
            lines.append(
                earnings.EarningLine(
                    usage_id=usage_id,
                    model_id=row["model_id"],
                    user_id=user_id,
                    amount_ucr=earned,
                    tokens=tokens,
                    rule_version=0,
                )
            )
    ledger.post_transfers(session, transfers, now=now, locked=dict(locked))
    earnings.record(session, lines, batch.stats, now=now)
    for k, (row, usage_id, paid) in enumerate(zip(batch.rows, usage_ids, batch.paid, strict=True)):
        i = batch.row_results[k]
        results[i] = ChargeResult(
            idempotency_key=events[i].idempotency_key,
            status="charged",
            usage_id=usage_id,
            model_id=row["model_id"],
            charge_ucr=row["charge_ucr"],
            cost_uusd=row["cost_uusd"],
            earnings=tuple(paid),
            balance_ucr=row["balance_after_ucr"],
            price_version_id=row["price_version_id"],
        )


def _replay_known(
    session: Session,
    events: Sequence[UsageEvent],
    hashes: list[str],
    results: list[ChargeResult | None],
    raise_errors: bool,
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
            results[i] = _rejected(event, _conflict(event), raise_errors)
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


def _rejected(event: UsageEvent, exc: DomainError, raise_errors: bool) -> ChargeResult:
    if raise_errors:
        raise exc
    return ChargeResult(
        idempotency_key=event.idempotency_key,
        status="rejected",
        error_code=exc.code,
        error_message=str(exc),
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
