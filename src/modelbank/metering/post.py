"""Post a batch's charge lines (DESIGN §3, §6): usage rows, the linked transfers (wallet →
revenue, revenue → each beneficiary's earnings), captured holds, grant burns, earnings
lines and model aggregates, rollups and low-balance alerts, in the caller's transaction.

Set-based: one statement per table for the whole batch (an ``executemany``), one totals
update per account touched (DESIGN §16: per-event round trips are the main cost).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from modelbank.db.bulk import BulkInsert, db_json
from modelbank.db.fast import FastSQL, Read, pipelined, read_ahead
from modelbank.db.fast import connection as fast_connection
from modelbank.earnings import service as earnings
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import TransferCode
from modelbank.metering import rollups
from modelbank.metering.context import BatchContext
from modelbank.metering.decide import ChargeLine
from modelbank.metering.events import ChargeResult, clean_metadata
from modelbank.metering.models import usage_events_table as usage
from modelbank.wallets import alerts

_USAGE_CHARGE = TransferCode.USAGE_CHARGE.value
_EARNING = TransferCode.EARNING.value

_INSERT_USAGE = BulkInsert(
    usage,
    (
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
        "limited_key_id",
    ),
    skip_conflicts_on="idempotency_key",
)
_MAX_USAGE_ID = FastSQL("SELECT coalesce(max(id), 0) FROM usage_events")
_NEXT_USAGE_IDS_PG = FastSQL(
    f"SELECT nextval(pg_get_serial_sequence('{usage.name}', 'id')) FROM generate_series(1, ?)"
)


def usage_ids_read(events: int) -> Read:
    """PostgreSQL: the read that reserves usage ids for a batch of ``events`` events (as
    many as events, whatever is charged: unused ids leave gaps, as sequences do)."""
    return _NEXT_USAGE_IDS_PG.read((events,))


def post(session: Session, ctx: BatchContext, lines: Sequence[ChargeLine]) -> list[ChargeLine]:
    """Write ``lines`` (decided against ``ctx``) and answer their events in ``ctx.batch``.
    With no lines, only the grants swept while loading are written.

    The usage rows go first, skipping any whose idempotency key another transaction
    committed after this batch looked its keys up (two callers sending one key for two
    users at once; PostgreSQL, where they do not share a wallet lock). When that happens
    nothing else is written: the rows just inserted are removed and the lines whose keys
    were taken are returned, for the pipeline to answer (replay or conflict) and to decide
    the others again. Returns [] when everything was posted."""
    if not lines:
        ctx.book.flush(session, now=ctx.now)
        return []
    ids = _usage_ids(session, len(lines), len(ctx.batch.events))
    for line, usage_id in zip(lines, ids, strict=False):
        line.usage_id = usage_id
    taken = _insert_usage(session, ctx, lines)
    if taken:
        return taken
    # The rest only writes (raw driver statements, nothing read back): on PostgreSQL one
    # round trip for all of it instead of one per statement. A captured hold is posted
    # first, outside: its posting reads back the new transfer's id.
    captured = [line for line in lines if line.event.hold_id is not None]
    for line in captured:
        _post_hold(session, ctx, line)
    with pipelined(fast_connection(session)):
        _LINK_HOLD.executemany(
            fast_connection(session), [(line.usage_id, line.event.hold_id) for line in captured]
        )
        _post_transfers(session, ctx, lines)
        ctx.book.flush(session, now=ctx.now)
        _record_earnings(session, ctx, lines)
        rollups.record_charges(session, [_fact(line) for line in lines], now=ctx.now)
        # The alerts' first read, in the same round trip as the writes before it.
        payers = {line.event.user_id for line in lines}
        read_ahead(fast_connection(session), [alerts.state_read(payers)])
    alerts.check(session, payers, now=ctx.now)
    for line in lines:
        ctx.batch.answer(line.index, charged(line))
    return []


def charged(line: ChargeLine) -> ChargeResult:
    """The ``charged`` result of a posted line."""
    return ChargeResult(
        idempotency_key=line.event.idempotency_key,
        status="charged",
        usage_id=line.usage_id,
        model_id=line.model_id,
        charge_ucr=line.quote.charge_ucr,
        cost_uusd=line.quote.cost_uusd,
        earnings=line.earned.parts,
        balance_ucr=line.balance_after_ucr,
        price_version_id=line.card.version_id,
    )


def _usage_ids(session: Session, count: int, events: int) -> list[int]:
    """At least ``count`` new usage ids, ascending. PostgreSQL: ``events`` (≥ count) ids
    from the table's sequence (:func:`usage_ids_read`, usually read ahead). SQLite: after
    the largest id, which is safe because the transaction holds the writer lock (BEGIN
    IMMEDIATE, :mod:`modelbank.db.engine`) until it commits."""
    conn = fast_connection(session)
    if conn.dialect.name == "postgresql":
        read = usage_ids_read(max(count, events))
        return sorted(int(row[0]) for row in read.sql.execute(conn, read.params).fetchall())
    top = int(_MAX_USAGE_ID.execute(conn).fetchone()[0])
    return list(range(top + 1, top + 1 + count))


_OURS_AND_TAKEN = select(usage.c.id, usage.c.idempotency_key).where(
    usage.c.idempotency_key.in_(bindparam("keys", expanding=True))
)
_DELETE_USAGE = delete(usage).where(usage.c.id.in_(bindparam("ids", expanding=True)))


def _insert_usage(
    session: Session, ctx: BatchContext, lines: Sequence[ChargeLine]
) -> list[ChargeLine]:
    """Insert the usage rows; return the lines whose key was taken meanwhile (then no row
    of this batch is left inserted)."""
    rows = []
    for line in lines:
        event, quote, earned = line.event, line.quote, line.earned
        rows.append(
            (
                line.usage_id,
                event.idempotency_key,
                line.request_hash,
                event.user_id,
                line.model_id,
                line.card.version_id,
                event.usage_type,
                event.input_tokens,
                event.cached_input_tokens,
                event.output_tokens,
                event.units,
                quote.charge_ucr,
                quote.cost_uusd,
                earned.total_ucr,
                line.margin_ucr,
                line.balance_after_ucr,
                None if earned.note is None else earned.note.value,
                line.occurred_db,
                ctx.now_db,
                db_json(clean_metadata(event.metadata)) if event.metadata else None,
                event.limited_key_id,  # counted on it by decide (posted lines only)
            )
        )
    conn = fast_connection(session)
    # In key order: two batches sharing keys take their key locks in the same order, so
    # one waits for the other instead of both deadlocking (PostgreSQL).
    rows.sort(key=lambda row: row[1])
    if _INSERT_USAGE.execute(conn, rows) == len(rows):
        return []
    ours = {line.usage_id for line in lines}
    stored = conn.execute(
        _OURS_AND_TAKEN, {"keys": [line.event.idempotency_key for line in lines]}
    ).all()
    taken_keys = {row.idempotency_key for row in stored if int(row.id) not in ours}
    inserted = [int(row.id) for row in stored if int(row.id) in ours]
    if inserted:
        conn.execute(_DELETE_USAGE, {"ids": inserted})
    return [line for line in lines if line.event.idempotency_key in taken_keys]


def _post_transfers(session: Session, ctx: BatchContext, lines: Sequence[ChargeLine]) -> None:
    """Wallet → revenue for each charge (or the captured hold posted), revenue → earnings
    for each beneficiary's part, and the grants burned, in burn-down order."""
    revenue = ctx.revenue_account
    locked = ctx.locked
    transfers: list[ledger.LinkedRow] = []
    for line in lines:
        charge, usage_id = line.quote.charge_ucr, line.usage_id
        if line.event.hold_id is not None:
            pass  # posted by _post_hold
        elif charge > 0:
            transfers.append((line.wallet, revenue, charge, _USAGE_CHARGE, usage_id))
        if charge > 0:
            ctx.book.burn(line.event.user_id, charge, "usage", usage_id, now=ctx.now)
        for user_id, earned in line.earned.parts:
            transfers.append((revenue, ctx.earning_accounts[user_id], earned, _EARNING, usage_id))
    ledger.post_linked(
        session,
        transfers,
        ref_type="usage",
        now=ctx.now,
        locked=locked,
        existing=[revenue, *ctx.earning_accounts.values()],
    )


_LINK_HOLD = FastSQL("UPDATE wallet_holds SET usage_id = ? WHERE transfer_id = ?")
"""A wallet hold names the usage event that captured it (a ledger hold without a wallet
row, if any, is unaffected)."""


def _post_hold(session: Session, ctx: BatchContext, line: ChargeLine) -> None:
    """A captured hold: post it for the charge (releasing the rest), or void it at 0."""
    hold_id = line.event.hold_id
    if hold_id is None:
        return
    if line.quote.charge_ucr > 0:
        ledger.post_hold(
            session,
            hold_id,
            line.quote.charge_ucr,
            now=ctx.now,
            ref=("usage", line.usage_id),
            locked=ctx.locked,
            hold=ctx.holds[hold_id],
        )
    else:
        ledger.void_hold(session, hold_id, now=ctx.now, reason="captured_zero")


def _record_earnings(session: Session, ctx: BatchContext, lines: Sequence[ChargeLine]) -> None:
    """Earning lines (one per beneficiary paid) and each model's aggregates."""
    rows: list[earnings.EarningRow] = []
    stats: dict[int, earnings.StatsDelta] = {}
    for line in lines:
        earned = line.earned
        for user_id, amount in earned.parts:
            rows.append(
                (
                    line.usage_id,
                    line.model_id,
                    user_id,
                    amount,
                    line.tokens,
                    line.rule_version,
                    earned.popularity,
                    earned.usage_type,
                    ctx.payers[line.model_id].shares[user_id],
                )
            )
        delta = stats.get(line.model_id)
        if delta is None:
            delta = stats[line.model_id] = earnings.StatsDelta()
        delta.uses += 1
        delta.tokens += line.tokens
        delta.revenue_ucr += line.quote.charge_ucr
        delta.earnings_ucr += earned.total_ucr
        if delta.last_used_at is None or line.occurred_at > delta.last_used_at:
            delta.last_used_at = line.occurred_at
    earnings.record_rows(session, rows, stats, now=ctx.now)


def _fact(line: ChargeLine) -> rollups.ChargeFact:
    return rollups.ChargeFact(
        user_id=line.event.user_id,
        model_id=line.model_id,
        usage_type=line.event.usage_type,
        tokens=line.tokens,
        charge_ucr=line.quote.charge_ucr,
        cost_uusd=line.quote.cost_uusd,
        earnings=line.earned.parts,
    )
