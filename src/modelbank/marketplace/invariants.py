"""The marketplace's invariants (DESIGN §10, issue 15 §3), checked by ``modelbank verify`` and
after every test scenario. Names are stable:

* ``market_order_escrow``: per order, seller + commission + returned ≤ paid, and the ledger
  agrees: the escrow transfers that name the order (ref ``marketplace_order``) paid in
  exactly ``paid_ucr`` and paid out exactly seller + commission + returned.
* ``market_order_closed``: a closed order holds nothing in escrow (released to seller +
  commission + returned = paid); an open one has an active allocation.
* ``market_allocation_sums``: an order's allocations share its payment exactly and their
  releases and returns sum to the order's; a closed allocation holds nothing in escrow.
* ``market_escrow_balance``: the ``marketplace_escrow`` account's balance = the escrow the
  open orders still hold.
* ``market_quota``: per resource, the market part offered or sold (open listings, open
  bundles, active allocations' quantity, closed allocations' consumption) ≤ the market
  part; the pool part (quota − market part) is what was credited at deposit
  (:mod:`modelbank.pool.invariants`), so pool part + market part = quota and no µUSD is
  both credited and sold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, func, select
from sqlalchemy.orm import Session

from modelbank.ledger import service as ledger
from modelbank.ledger.codes import AccountCode
from modelbank.ledger.invariants import Violation
from modelbank.ledger.models import accounts_table as accounts
from modelbank.ledger.models import transfers_table as transfers
from modelbank.marketplace.escrow import ORDER_REF
from modelbank.marketplace.listings import reserved_uusd
from modelbank.marketplace.models import allocations_table as allocations
from modelbank.marketplace.models import orders_table as orders
from modelbank.pool.models import resources_table as resources


def check(session: Session, *, limit: int = 20) -> list[Violation]:
    """Every broken marketplace invariant (at most ``limit`` per name)."""
    conn = session.connection()
    escrow_id = ledger.platform_account(session, AccountCode.MARKETPLACE_ESCROW)
    paid_in, paid_out = _escrow_flows(conn, escrow_id)
    allocation_rows = conn.execute(select(allocations)).all()
    per_alloc = _allocation_totals(allocation_rows)
    order_rows = conn.execute(select(orders)).all()
    return [
        *_allocation_sums(allocation_rows, order_rows, per_alloc, limit),
        *_escrow_balance(conn, escrow_id, order_rows),
        *_order_closed(order_rows, per_alloc, limit),
        *_order_escrow(order_rows, paid_in, paid_out, limit),
        *_quota(session, conn, limit),
    ]


def _escrow_flows(conn: Connection, escrow_id: int) -> tuple[dict[int, int], dict[int, int]]:
    """Per order id, the µcr the ledger paid into and out of escrow (transfers that name the
    order, ref ``marketplace_order``)."""
    paid_in: dict[int, int] = defaultdict(int)
    paid_out: dict[int, int] = defaultdict(int)
    for ref_id, debit, credit, amount in conn.execute(
        select(
            transfers.c.ref_id,
            transfers.c.debit_account_id,
            transfers.c.credit_account_id,
            func.sum(transfers.c.amount),
        )
        .where(transfers.c.ref_type == ORDER_REF, transfers.c.flags == 0)
        .group_by(transfers.c.ref_id, transfers.c.debit_account_id, transfers.c.credit_account_id)
    ):
        if int(credit) == escrow_id:
            paid_in[int(ref_id)] += int(amount)
        if int(debit) == escrow_id:
            paid_out[int(ref_id)] += int(amount)
    return paid_in, paid_out


def _allocation_totals(allocation_rows: Sequence[Row[Any]]) -> dict[int, list[int]]:
    """Per order id, its allocations' [paid, seller, commission, returned] µcr sums and the
    number of active allocations."""
    per_alloc: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for row in allocation_rows:
        sums = per_alloc[int(row.order_id)]
        sums[0] += int(row.paid_ucr)
        sums[1] += int(row.seller_ucr)
        sums[2] += int(row.commission_ucr)
        sums[3] += int(row.returned_ucr)
        sums[4] += row.status == "active"
    return per_alloc


def _released(row: Row[Any]) -> int:
    """µcr an order or allocation has paid out of escrow: seller + commission + returned."""
    return int(row.seller_ucr) + int(row.commission_ucr) + int(row.returned_ucr)


def _allocation_sums(
    allocation_rows: Sequence[Row[Any]],
    order_rows: Sequence[Row[Any]],
    per_alloc: dict[int, list[int]],
    limit: int,
) -> list[Violation]:
    """``market_allocation_sums``: a closed allocation holds nothing in escrow, and a
    non-stake order's allocations share its payment, releases and returns exactly."""
    violations: list[Violation] = []
    for row in allocation_rows:
        out = _released(row)
        if row.status != "active" and out != int(row.paid_ucr):
            violations.append(
                Violation(
                    "market_allocation_sums",
                    f"allocation {row.id} is {row.status} with {int(row.paid_ucr) - out} µcr"
                    " still in escrow",
                )
            )
    for row in order_rows:
        if row.kind == "stake":
            continue
        order_id = int(row.id)
        sums = per_alloc.get(order_id, [0, 0, 0, 0, 0])
        mine = [
            int(row.paid_ucr),
            int(row.seller_ucr),
            int(row.commission_ucr),
            int(row.returned_ucr),
        ]
        if sums[:4] != mine:
            violations.append(
                Violation(
                    "market_allocation_sums",
                    f"order {order_id}: allocations sum to {sums[:4]}, the order to {mine}",
                )
            )
    return violations[:limit]


def _escrow_balance(
    conn: Connection, escrow_id: int, order_rows: Sequence[Row[Any]]
) -> list[Violation]:
    """``market_escrow_balance``: the escrow account's balance = what open orders still hold."""
    open_escrow = sum(
        int(row.paid_ucr) - _released(row) for row in order_rows if row.status == "open"
    )
    balance = conn.execute(
        select(accounts.c.credits_posted - accounts.c.debits_posted).where(
            accounts.c.id == escrow_id
        )
    ).scalar_one()
    if int(balance) != open_escrow:
        return [
            Violation(
                "market_escrow_balance",
                f"marketplace_escrow holds {int(balance)} µcr, open orders {open_escrow} µcr",
            )
        ]
    return []


def _order_closed(
    order_rows: Sequence[Row[Any]], per_alloc: dict[int, list[int]], limit: int
) -> list[Violation]:
    """``market_order_closed``: a closed order holds nothing in escrow; an open non-stake
    order has an active allocation."""
    violations: list[Violation] = []
    for row in order_rows:
        order_id, paid = int(row.id), int(row.paid_ucr)
        out = _released(row)
        if row.status == "closed" and out != paid:
            violations.append(
                Violation(
                    "market_order_closed", f"order {order_id} is closed with {paid - out} µcr held"
                )
            )
        active = per_alloc.get(order_id, [0, 0, 0, 0, 0])[4]
        if row.kind != "stake" and row.status == "open" and not active:
            violations.append(
                Violation(
                    "market_order_closed", f"order {order_id} is open with no active allocation"
                )
            )
    return violations[:limit]


def _order_escrow(
    order_rows: Sequence[Row[Any]],
    paid_in: dict[int, int],
    paid_out: dict[int, int],
    limit: int,
) -> list[Violation]:
    """``market_order_escrow``: per order, released + returned ≤ paid, and the ledger's escrow
    transfers for the order paid in ``paid_ucr`` and paid out released + returned exactly."""
    violations: list[Violation] = []
    for row in order_rows:
        order_id, paid = int(row.id), int(row.paid_ucr)
        out = _released(row)
        if out > paid or paid_in[order_id] != paid or paid_out[order_id] != out:
            violations.append(
                Violation(
                    "market_order_escrow",
                    f"order {order_id}: paid {paid}, released + returned {out}; ledger paid in"
                    f" {paid_in[order_id]}, out {paid_out[order_id]}",
                )
            )
    return violations[:limit]


def _quota(session: Session, conn: Connection, limit: int) -> list[Violation]:
    """``market_quota``: per resource, the market part offered or sold ≤ the market part."""
    violations: list[Violation] = []
    for resource_id, market in conn.execute(
        select(resources.c.id, resources.c.market_quota_uusd).where(
            resources.c.market_quota_uusd > 0
        )
    ):
        reserved = reserved_uusd(session, int(resource_id))
        if reserved > int(market):
            violations.append(
                Violation(
                    "market_quota",
                    f"resource {resource_id}: {reserved} µUSD of its {int(market)} µUSD market"
                    " part offered or sold",
                )
            )
    return violations[:limit]
