"""The pool's invariants (DESIGN §9: "no credit is created or lost: ``verify`` proves it"),
checked by ``modelbank verify`` beside the ledger's and after every test scenario.

Per resource (names are stable):

* ``pool_deposit_ledger``: ``deposit_credit_ucr`` = the deposit transfers that name it
  (``pool_deposits`` → the depositor's wallet, code ``deposit``, not reversals), and
  ``fee_ucr`` = its ``fee`` transfers (``pool_deposits`` → ``platform_fees``): what
  ``pool_deposits`` paid out for the resource is exactly its deposit credit plus fee.
* ``pool_clawback_ledger``: ``clawed_back_ucr`` = the reversals of its deposit credit
  (clawed from the wallet at the end, or collected later from a debt) + its debts still
  open; ``moved_credit_ucr`` = the reversals keyed ``pool:move:…`` (quota moved to the
  market part, :mod:`modelbank.pool.market_part`).
* ``pool_deposit_identity``: ``deposit_credit_ucr − moved_credit_ucr`` = consumed share +
  ``clawed_back_ucr`` + outstanding, where outstanding is the unconsumed credit of a live
  resource and 0 once it ended (withdrawn or failed); so a live resource has clawed back
  nothing, an ended one clawed back exactly its unconsumed credit; platform resources carry
  no credit or fee.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode, TransferCode
from modelbank.ledger.invariants import Violation
from modelbank.ledger.models import transfers_table as transfers
from modelbank.pool.lifecycle import ENDED
from modelbank.pool.market_part import MOVE_KEY_PREFIX
from modelbank.pool.models import pool_debts_table as debts
from modelbank.pool.models import resources_table as resources
from modelbank.pool.resources import consumed_share, unconsumed_credit


def _ledger_sums(session: Session) -> dict[tuple[int, str], int]:
    """(resource id, kind) → µcr, kind ``deposit`` / ``fee`` / ``reversal``."""
    pool = ledger.platform_account(session, AccountCode.POOL_DEPOSITS)
    kind = func.coalesce(transfers.c.reverses_id, 0) != 0
    moved = transfers.c.idempotency_key.like(f"{MOVE_KEY_PREFIX}%")
    rows = session.connection().execute(
        select(
            transfers.c.ref_id,
            transfers.c.code,
            kind.label("is_reversal"),
            moved.label("is_move"),
            func.sum(transfers.c.amount),
        )
        .where(
            transfers.c.ref_type == "resource",
            transfers.c.code.in_([TransferCode.DEPOSIT.value, TransferCode.FEE.value]),
            # deposits and fees leave pool_deposits; clawbacks return to it
            (
                and_(transfers.c.debit_account_id == pool, transfers.c.reverses_id.is_(None))
                | and_(transfers.c.credit_account_id == pool, transfers.c.reverses_id.is_not(None))
            ),
        )
        .group_by(transfers.c.ref_id, transfers.c.code, kind, moved)
    )
    out: dict[tuple[int, str], int] = defaultdict(int)
    for ref_id, code, is_reversal, is_move, amount in rows:
        name = ("move" if is_move else "reversal") if is_reversal else code
        out[(int(ref_id), name)] += int(amount)
    return out


def check(session: Session, *, limit: int = 20) -> list[Violation]:
    """Every broken pool invariant (module docstring), at most ``limit`` per name."""
    sums = _ledger_sums(session)
    open_debts = {
        int(rid): int(left)
        for rid, left in session.connection().execute(
            select(debts.c.resource_id, func.sum(debts.c.remaining_ucr)).group_by(
                debts.c.resource_id
            )
        )
    }
    found: dict[str, list[Violation]] = defaultdict(list)

    def report(name: str, detail: str) -> None:
        if len(found[name]) < limit:
            found[name].append(Violation(name, detail))

    rows = session.connection().execute(
        select(
            resources.c.id,
            resources.c.owner_id,
            resources.c.status,
            resources.c.quota_uusd,
            resources.c.market_quota_uusd,
            resources.c.consumed_uusd,
            resources.c.deposit_credit_ucr,
            resources.c.fee_ucr,
            resources.c.clawed_back_ucr,
            resources.c.moved_credit_ucr,
        ).order_by(resources.c.id)
    )
    for r in rows:
        rid, deposit, fee, clawed = (
            int(r.id),
            int(r.deposit_credit_ucr),
            int(r.fee_ucr),
            int(r.clawed_back_ucr),
        )
        booked = (sums.get((rid, "deposit"), 0), sums.get((rid, "fee"), 0))
        if booked != (deposit, fee):
            report(
                "pool_deposit_ledger",
                f"resource {rid}: deposit {deposit} / fee {fee} µcr, ledger"
                f" {booked[0]} / {booked[1]} µcr",
            )
        returned = sums.get((rid, "reversal"), 0) + open_debts.get(rid, 0)
        moved = int(r.moved_credit_ucr)
        if returned != clawed or sums.get((rid, "move"), 0) != moved:
            report(
                "pool_clawback_ledger",
                f"resource {rid}: clawed back {clawed} µcr, reversed + owed {returned} µcr;"
                f" moved {moved} µcr, reversed {sums.get((rid, 'move'), 0)} µcr",
            )
        deposit -= moved  # the credit of the current pool part
        pool = int(r.quota_uusd) - int(r.market_quota_uusd)
        share = consumed_share(deposit, pool, int(r.consumed_uusd))
        outstanding = (
            0 if r.status in ENDED else unconsumed_credit(deposit, pool, int(r.consumed_uusd))
        )
        if (
            r.owner_id is None and deposit + fee + clawed
        ) or deposit != share + clawed + outstanding:
            report(
                "pool_deposit_identity",
                f"resource {rid} ({r.status}): deposit {deposit} ≠ consumed share {share}"
                f" + clawed back {clawed} + outstanding {outstanding} µcr",
            )
    return [v for name in sorted(found) for v in found[name]]
