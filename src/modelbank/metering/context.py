"""The batch context (DESIGN §6, §16): everything deciding a batch's events needs, loaded
once per batch whatever its size: the wallets (locked), their open grants, the holds being
captured, the models, premium access, the rate cards in force, the earnings payers, the
accounts credited. Each load is one query (or none when nothing needs it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from modelbank.auth import limits as key_limits
from modelbank.catalog import access
from modelbank.catalog.service import ModelInfo
from modelbank.db import epoch as epochs
from modelbank.db import fast
from modelbank.db.bulk import db_timestamp
from modelbank.earnings import service as earnings
from modelbank.earnings.payer import Payer
from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.ledger.errors import TransferNotFound
from modelbank.metering import reference
from modelbank.metering.batch import Batch
from modelbank.pricing.ratecard import RateCard
from modelbank.wallets import grants


@dataclass(slots=True)
class BatchContext:
    """What :func:`~modelbank.metering.decide.decide` reads, and the running totals it keeps
    while the batch's events are decided in order (µcr spent per wallet, uses per model).

    ``wallets``: user id → wallet totals read under lock (rows locked until the caller's
    transaction ends). ``models``: model reference (id or slug) → model. ``cards``: model
    id → rate card in force at ``now``. ``payers``: model id → earnings payer.
    ``blocked``: (user id, model id) pairs lacking premium access.
    """

    batch: Batch
    now: datetime
    now_db: Any
    dialect: str
    wallets: dict[int, ledger.AccountBalance]
    book: grants.GrantBook
    holds: dict[int, ledger.Hold]
    models: dict[int | str, ModelInfo]
    blocked: set[tuple[int, int]]
    cards: dict[int, RateCard]
    payers: dict[int, Payer]
    earning_accounts: dict[int, int]
    revenue_account: int
    conn: Connection
    """The transaction's connection: key limits are counted as events are decided."""
    spent: dict[int, int] = field(default_factory=dict)
    """Wallet account id → µcr charged to it so far in this batch."""
    uses: dict[int, int] = field(default_factory=dict)
    """Model id → uses charged so far in this batch."""
    first_of_key: dict[str, int] = field(default_factory=dict)
    """Idempotency key → index of the first event charging it in this batch."""
    captured: set[int] = field(default_factory=set)
    """Holds posted by events decided so far in this batch."""
    released: dict[int, int] = field(default_factory=dict)
    """Wallet account id → µcr its holds captured in this batch reserved (released when
    posted, so available again to the batch's later events)."""
    key_counts: list[tuple[int, int, int]] = field(default_factory=list)
    """(key id, µcr charged, µcr of the hold settled) counted on limited keys so far."""

    def restart(self) -> None:
        """Forget the running totals, to decide the batch's events again (nothing of the
        previous decisions was posted; what they counted on limited keys is taken back)."""
        for key_id, charged, held in self.key_counts:
            key_limits.adjust(self.conn, key_id, spent_ucr=-charged, reserved_ucr=held)
        self.key_counts.clear()
        self.spent.clear()
        self.uses.clear()
        self.first_of_key.clear()
        self.captured.clear()
        self.released.clear()

    @property
    def locked(self) -> dict[int, ledger.AccountBalance]:
        """Wallet account id → locked totals (kept current by the ledger as it posts)."""
        return {w.id: w for w in self.wallets.values()}

    def db_time(self, moment: datetime | None) -> tuple[datetime, Any]:
        """(``moment`` or now, as the database binds it)."""
        if moment is None:
            return self.now, self.now_db
        return moment, db_timestamp(self.dialect, moment)


def lock_wallets(session: Session, batch: Batch) -> dict[int, ledger.AccountBalance]:
    """Lock the wallets of the batch's open events (one query, account-id order: no
    deadlocks). Done before the idempotency lookup, so a concurrent retry of the same event
    waits on the wallet lock and then finds the first one's row (PostgreSQL; SQLite
    serialises writers with BEGIN IMMEDIATE anyway)."""
    users = (batch.events[i].user_id for i in batch.open())
    return ledger.lock_user_accounts(session, users, AccountCode.USER_WALLET)


def load(
    session: Session,
    batch: Batch,
    wallets: dict[int, ledger.AccountBalance],
    pending: list[int],
    *,
    now: datetime,
) -> BatchContext:
    """Load the context of the ``pending`` events of ``batch`` (valid, not replays), whose
    users' ``wallets`` are locked. Expired grants of those wallets are swept before any
    event is decided, so an expired credit is never spent. Locks are taken in one order:
    wallets (by the caller), the models' aggregate rows, then platform accounts."""
    events = batch.events
    refs = {events[i].model for i in pending}
    snap, models, counts = _lock_models(session, refs)
    # After the model rows' locks, on every path: the sweep of expired grants locks
    # platform_promotions, and locks are taken in one order (wallets, models, platform
    # accounts) or two batches could deadlock.
    book = grants.GrantBook.load(
        session,
        {
            events[i].user_id: wallets[events[i].user_id]
            for i in pending
            if events[i].user_id in wallets
        },
        now=now,
    )
    # Premium models need bought access (or to be the creator's): one query, and only
    # when a premium model is in the batch.
    blocked = access.missing_access(
        session,
        (
            (events[i].user_id, models[events[i].model])
            for i in pending
            if events[i].model in models
        ),
    )
    cards, payers = _rates_and_payers(snap, models, counts, now)
    dialect = session.get_bind().dialect.name
    return BatchContext(
        batch=batch,
        now=now,
        now_db=db_timestamp(dialect, now),
        dialect=dialect,
        wallets=wallets,
        book=book,
        holds=_holds(session, batch, pending),
        models=models,
        blocked=blocked,
        cards=cards,
        payers=payers,
        earning_accounts=snap.earning_accounts,
        revenue_account=ledger.platform_account(session, AccountCode.PLATFORM_REVENUE),
        conn=session.connection(),
    )


def _lock_models(
    session: Session, refs: set[int | str]
) -> tuple[reference.Snapshot, dict[int | str, ModelInfo], dict[int, int]]:
    """Resolve the models from the reference data, lock their aggregate rows (their use
    counts) and make sure the reference data is the one in force under those locks."""
    postgres = session.get_bind().dialect.name == "postgresql"
    # PostgreSQL: the epoch is read once, after the model rows are locked (below), so the
    # cached snapshot is taken as it is for now. SQLite: nothing changes under BEGIN
    # IMMEDIATE, so the epoch is read first.
    snap = (reference.peek(session, refs) if postgres else None) or reference.snapshot(
        session, refs
    )
    models = snap.resolve(refs)
    model_ids = {info.id for info in models.values()}
    conn = fast.connection(session)
    if postgres and not fast.is_read_ahead(
        conn, earnings.use_counts_read(conn.dialect.name, model_ids)
    ):
        # The aggregate rows are locked below, not ahead: the epoch read ahead came before
        # that lock and must be read again after it.
        fast.drop_read_ahead(conn, epochs.READ)
    counts = earnings.lock_use_counts(session, model_ids)
    if postgres:
        # A stake sale (or any reference change) that committed while this transaction
        # waited for the model rows' locks moved the epoch: read it, under the locks.
        moved = epochs.current(session)
        if moved != snap.epoch:
            snap = reference.snapshot(session, refs, epoch=moved)
            models = snap.resolve(refs)
            new_ids = {info.id for info in models.values()} - counts.keys()
            counts.update(earnings.lock_use_counts(session, new_ids))
    return snap, models, counts


def _rates_and_payers(
    snap: reference.Snapshot,
    models: Mapping[int | str, ModelInfo],
    counts: Mapping[int, int],
    now: datetime,
) -> tuple[dict[int, RateCard], dict[int, Payer]]:
    """Per model: the rate card in force at ``now`` (absent: no price) and the payer of
    its earnings terms in force, with the use count read under lock."""
    cards: dict[int, RateCard] = {}
    payers: dict[int, Payer] = {}
    for info in models.values():
        ref = snap.models[info.id]
        card = ref.card_at(now)
        if card is not None:
            cards[info.id] = card
        payers[info.id] = ref.payer_at(now, counts[info.id], platform_monetised=snap.monetised)
    return cards, payers


def _holds(session: Session, batch: Batch, pending: list[int]) -> dict[int, ledger.Hold]:
    """The holds the pending events capture (rare: one query each)."""
    found: dict[int, ledger.Hold] = {}
    for i in pending:
        hold_id = batch.events[i].hold_id
        if hold_id is not None and hold_id not in found:
            try:
                found[hold_id] = ledger.get_hold(session, hold_id)
            except TransferNotFound:
                continue
    return found
